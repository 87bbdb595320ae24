"""Failure review rules (pure): what kind a failure is, what ops may do with an object in a given state,
and the PHI-free view of a source object's desired state."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from shared.domain.errors import BadRequest

# Fields of a desired state that never leave qbsync's ledger, not even towards ops tools.
PRIVATE_FIELDS = frozenset({"first_name", "last_name", "email", "phone", "billing_account_name", "description"})

# Ops actions → the object statuses they may start from and the status they lead to.
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "exclude": (frozenset({"failed", "retrying", "waiting", "held", "manual"}), "excluded"),
    "manual": (frozenset({"failed", "retrying", "waiting", "held"}), "manual"),
    "manual_done": (frozenset({"manual"}), "manual_done"),
}
# An object ops may send through the normal path again.
RETRYABLE_STATUSES = frozenset({"failed", "retrying", "waiting", "held", "excluded", "manual"})
FAILURE_STATUSES = ("failed",)


def failure_kind(error: Mapping[str, Any] | None) -> str:
    """A stable, low-cardinality category of a recorded error (decided by its fields, never its text)."""
    err = error or {}
    if err.get("mapping"):
        return "missing_mapping"
    name = str(err.get("error") or "")
    if name == "PhiLeakBlocked":
        return "phi_blocked"
    if name == "RetryableError" or err.get("kind") == "retryable":
        return "retries_exhausted"
    if err.get("qbo_code"):
        return f"qbo_{err['qbo_code']}"
    if name == "ReconnectNeeded" or err.get("kind") == "reconnect":
        return "reconnect"
    return "other"


def mapping_key(error: Mapping[str, Any] | None) -> str | None:
    """The tenant mapping a failure lacks (``services.97110``), if it is a missing-mapping failure."""
    value = (error or {}).get("mapping")
    return str(value) if value else None


def phi_free(desired: Mapping[str, Any] | None) -> dict[str, Any]:
    """The desired state without patient names, e-mail, phone or free text (recursively)."""

    def clean(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: clean(v) for k, v in value.items() if k not in PRIVATE_FIELDS}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    result = clean(dict(desired or {}))
    assert isinstance(result, dict)
    return result


def check_transition(action: str, status: str) -> str:
    """The status ``action`` leads to from ``status``. Raises BadRequest when the move is not allowed."""
    allowed, target = TRANSITIONS[action]
    if status not in allowed:
        raise BadRequest(
            f"cannot {action.replace('_', ' ')} an object that is {status}"
            f" (allowed from: {', '.join(sorted(allowed))})",
            field="status",
        )
    return target


def parse_age(text: str | None) -> timedelta | None:
    """``30m``, ``6h``, ``2d`` (or plain seconds) → timedelta. Raises BadRequest for anything else."""
    if not text:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    raw = text.strip().lower()
    try:
        if raw[-1] in units:
            return timedelta(seconds=float(raw[:-1]) * units[raw[-1]])
        return timedelta(seconds=float(raw))
    except (ValueError, IndexError) as exc:
        raise BadRequest(f"'{text}' is not an age such as 30m, 6h or 2d", field="older_than") from exc


def older_than(updated_at: str | None, age: timedelta | None, now: datetime) -> bool:
    if age is None:
        return True
    if not updated_at:
        return False
    return datetime.fromisoformat(updated_at) <= now - age
