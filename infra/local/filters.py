"""Lambda event filtering (FilterCriteria), the EventBridge-style pattern language Lambda uses.

A record is kept when ANY filter matches. A pattern is a JSON object whose leaves are lists of matchers; a
list matches when any matcher matches (OR), and all keys of an object must match (AND). Supported matchers:
exact values (string, number, boolean, null), ``prefix``, ``suffix``, ``equals-ignore-case``,
``anything-but`` (value, list or ``{"prefix": ...}``/``{"suffix": ...}``), ``numeric`` (comparisons and
ranges), ``exists`` and ``wildcard``, plus ``$or`` at any object level. When the event value is an array,
the leaf matches if any element matches, as in Lambda.

For SQS, Lambda filters on the message body parsed as JSON when the body is JSON (see
:func:`sqs_filter_view`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
from typing import Any

_MISSING = object()


def matches_any(filters: list[dict[str, Any]], event: dict[str, Any]) -> bool:
    """True when there are no filters or at least one pattern matches ``event``."""
    return not filters or any(matches(p, event) for p in filters)


def matches(pattern: dict[str, Any], event: Any) -> bool:
    if not isinstance(pattern, dict):
        return False
    for key, sub in pattern.items():
        if key == "$or":
            if not any(matches(alt, event) for alt in sub):
                return False
            continue
        value = event.get(key, _MISSING) if isinstance(event, dict) else _MISSING
        if isinstance(sub, dict):
            # A missing object matches only patterns that ask for absence: {"a": {"N": [{"exists": false}]}}
            # matches an event without "a" (Lambda's DynamoDB example filters on a missing attribute this way).
            if not _match_object(sub, {} if value is _MISSING else value):
                return False
        elif isinstance(sub, list):
            if not _match_leaf(sub, value):
                return False
        else:
            return False
    return True


def _match_object(sub: dict[str, Any], value: Any) -> bool:
    if isinstance(value, list):
        return any(isinstance(v, dict) and matches(sub, v) for v in value)
    return isinstance(value, dict) and matches(sub, value)


def _match_leaf(matchers: list[Any], value: Any) -> bool:
    for m in matchers:
        if isinstance(m, dict) and "exists" in m:
            present = value is not _MISSING
            if present == bool(m["exists"]):
                return True
            continue
        if value is _MISSING:
            continue
        values = value if isinstance(value, list) else [value]
        if any(_match_value(m, v) for v in values):
            return True
    return False


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _equal(expected: Any, v: Any) -> bool:
    if _is_number(expected) and _is_number(v):
        return float(expected) == float(v)
    if isinstance(expected, bool) or isinstance(v, bool):
        return isinstance(expected, bool) and isinstance(v, bool) and expected == v
    return type(expected) is type(v) and expected == v


def _match_value(m: Any, v: Any) -> bool:
    if not isinstance(m, dict):
        return _equal(m, v)
    if "prefix" in m:
        p = m["prefix"]
        if isinstance(p, dict) and "equals-ignore-case" in p:
            return isinstance(v, str) and v.lower().startswith(str(p["equals-ignore-case"]).lower())
        return isinstance(v, str) and v.startswith(p)
    if "suffix" in m:
        s = m["suffix"]
        if isinstance(s, dict) and "equals-ignore-case" in s:
            return isinstance(v, str) and v.lower().endswith(str(s["equals-ignore-case"]).lower())
        return isinstance(v, str) and v.endswith(s)
    if "equals-ignore-case" in m:
        return isinstance(v, str) and v.lower() == str(m["equals-ignore-case"]).lower()
    if "wildcard" in m:
        return isinstance(v, str) and fnmatch.fnmatchcase(v, str(m["wildcard"]).replace("[", "[[]"))
    if "anything-but" in m:
        ab = m["anything-but"]
        if isinstance(ab, list):
            return not any(_equal(x, v) for x in ab)
        if isinstance(ab, dict):
            return not _match_value(ab, v)
        return not _equal(ab, v)
    if "numeric" in m:
        return _is_number(v) and _numeric(m["numeric"], float(v))
    return False


def _numeric(spec: list[Any], v: float) -> bool:
    ops = {
        "=": lambda a, b: a == b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    for i in range(0, len(spec) - 1, 2):
        op, bound = spec[i], spec[i + 1]
        if op not in ops or not ops[op](v, float(bound)):
            return False
    return True


def sqs_filter_view(record: dict[str, Any]) -> dict[str, Any]:
    """The view Lambda matches SQS filters against: the record with ``body`` parsed when it is JSON."""
    view = dict(record)
    with contextlib.suppress(TypeError, ValueError):
        view["body"] = json.loads(record.get("body", ""))
    return view
