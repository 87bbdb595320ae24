"""The one place that maps errors to HTTP answers (API Gateway proxy responses)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from shared.domain.errors import BadRequest, QbsyncError, RequestError


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", **(headers or {})},
        "body": json.dumps(body, default=str, separators=(",", ":")),
    }


def error_response(err: RequestError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": type(err).__name__, "message": err.message}
    if err.field:
        body["field"] = err.field
    extra = {k: v for k, v in err.details.items() if k != "field" and v is not None}
    if extra:
        body["details"] = extra
    return json_response(err.status, body)


def validation_error(exc: ValidationError, prefix: str = "") -> BadRequest:
    """A pydantic error as a 400 naming the first offending field (dotted path), with all problems listed."""
    problems = []
    for e in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        problems.append({"field": loc, "problem": e["msg"]})
    first = problems[0] if problems else {"field": prefix or None, "problem": "invalid"}
    return BadRequest(f"{first['field']}: {first['problem']}", field=first["field"], problems=problems)


def internal_error_body(err: Exception) -> dict[str, Any]:
    if isinstance(err, QbsyncError):
        return err.to_dict()
    return {"error": "InternalError", "message": "unexpected error; it has been logged"}
