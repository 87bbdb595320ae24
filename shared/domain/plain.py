"""Plain records: frozen stdlib dataclasses that pydantic validates where data comes in from a person (the ops
API, the CLI), and that load back from the ledger without pydantic.

Why: pydantic's import and its first model build cost about as much as ``import boto3``. The workers read
tenants on every invocation but never take settings from a person, so they should not pay that at cold start.
The record classes declare their rules once (``Rules`` in ``Annotated`` types, ``__pydantic_config__`` for
unknown keys); ``validated`` enforces them with pydantic, imported on first use; ``from_stored`` rebuilds a record
from what ``to_json`` wrote, trusting the rules it was validated against when stored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")


class Rules:
    """Constraints on a value in an ``Annotated`` type, applied by pydantic (``min_length``, ``max_length``,
    ``pattern``, ``ge``, ``le``: pydantic-core's own schema keys) and shown in its JSON Schema."""

    def __init__(self, **constraints: Any) -> None:
        self.constraints = constraints

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        return {**handler(source), **self.constraints}


# Records refuse unknown keys when validated, so a typo in a setting is an error and not a setting ignored.
STRICT: dict[str, Any] = {"extra": "forbid"}


_adapters: dict[type[Any], Any] = {}
_hints: dict[type[Any], dict[str, Any]] = {}


def validated(cls: type[T], data: Any) -> T:
    """``data`` checked against ``cls``'s rules. Raises ``pydantic.ValidationError`` naming each bad field."""
    adapter = _adapters.get(cls)
    if adapter is None:
        from pydantic import TypeAdapter

        adapter = _adapters[cls] = TypeAdapter(cls)
    result: T = adapter.validate_python(data)
    return result


def to_json(obj: Any) -> Any:
    """A record as JSON-ready values: dates as ISO strings, nested records as dicts."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_json(v) for v in obj]
    if isinstance(obj, date | datetime):
        return obj.isoformat()
    return obj


def from_stored(cls: type[T], data: Mapping[str, Any]) -> T:
    """A record rebuilt from its stored JSON. Keys the record does not have are ignored (written by a newer
    version), missing ones take their defaults (written by an older one); DynamoDB's Decimals become the
    declared number type."""
    record: Any = cls
    hints = _hints.get(cls) or _hints.setdefault(cls, typing.get_type_hints(cls, include_extras=True))
    return cls(**{f.name: _value(hints[f.name], data[f.name]) for f in dataclasses.fields(record) if f.name in data})


def _value(kind: Any, raw: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin is typing.Annotated:
        return _value(typing.get_args(kind)[0], raw)
    if origin in (Union, types.UnionType):
        if raw is None:
            return None
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        return _value(inner[0], raw) if len(inner) == 1 else raw
    if origin is dict:
        value_kind = typing.get_args(kind)[1]
        return {k: _value(value_kind, v) for k, v in raw.items()}
    if origin is Literal or raw is None:
        return raw
    if dataclasses.is_dataclass(kind):
        return from_stored(kind, raw)  # type: ignore[arg-type]
    if kind is datetime:
        return raw if isinstance(raw, datetime) else datetime.fromisoformat(raw)
    if kind is date:
        return raw if isinstance(raw, date) else date.fromisoformat(raw)
    if kind in (float, int) and isinstance(raw, Decimal | str):
        return kind(raw)
    return raw
