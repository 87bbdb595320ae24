"""Validation problems as ``{"field": "events[3].data.lines[0].unit_price", "problem": "..."}`` entries."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from shared.domain.errors import BadRequest

if TYPE_CHECKING:  # pydantic is imported by the code that validates, not by every user of the errors
    from pydantic import ValidationError


def field_path(prefix: str, loc: Iterable[str | int]) -> str:
    """Join a pydantic location onto ``prefix``: list indexes as ``[i]``, keys dotted."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = str(part)
    return out


def problems_from(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """Every error of ``exc`` as a problem entry; input values are left out (they may carry PHI)."""
    return [
        {"field": field_path(prefix, e["loc"]) or prefix, "problem": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def bad_request(exc: ValidationError, prefix: str = "") -> BadRequest:
    """A pydantic error as a 400 naming the first offending field (dotted path), with all problems listed."""
    problems = problems_from(exc, prefix)
    first = problems[0] if problems else {"field": prefix, "problem": "invalid"}
    return BadRequest(f"{first['field']}: {first['problem']}", field=first["field"] or None, problems=problems)
