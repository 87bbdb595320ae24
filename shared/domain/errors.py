"""Error kinds. Decided by code, never by message text; one place (``shared.http``) maps them to HTTP."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorKind(StrEnum):
    RETRYABLE = "retryable"  # throttle, 5xx, timeout, stale SyncToken: try again after backoff
    PERMANENT = "permanent"  # validation, duplicate name, missing mapping: needs a human fix
    RECONNECT = "reconnect"  # invalid grant: hold the work until the company is reconnected
    WAITING = "waiting"  # a prerequisite (customer, invoice) is not ready yet: not a failure


class QbsyncError(Exception):
    """Base of every error qbsync raises on purpose."""

    kind: ErrorKind = ErrorKind.PERMANENT

    def __init__(self, message: str, *, suggested_fix: str = "", **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.suggested_fix = suggested_fix
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "error": type(self).__name__,
            "message": self.message,
            "suggested_fix": self.suggested_fix,
            **{k: v for k, v in self.details.items() if v is not None},
        }


# ---- request-path errors (ingest, ops, oauth): carry the HTTP status they map to ----
class RequestError(QbsyncError):
    status = 400

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message, field=field, **details)
        self.field = field


class BadRequest(RequestError):
    status = 400


class Unauthorized(RequestError):
    status = 401


class NotFound(RequestError):
    status = 404


class Conflict(RequestError):
    status = 409


class PayloadTooLarge(RequestError):
    status = 413


class UnsupportedMediaType(RequestError):
    status = 415


class UnprocessableEvent(RequestError):
    status = 422


# ---- sync errors ----
class RetryableError(QbsyncError):
    kind = ErrorKind.RETRYABLE


class PermanentError(QbsyncError):
    kind = ErrorKind.PERMANENT


class ReconnectNeeded(QbsyncError):
    kind = ErrorKind.RECONNECT


class WaitingOnDependency(QbsyncError):
    kind = ErrorKind.WAITING


class MissingMapping(PermanentError):
    """A service code, provider, location, payer type... has no QBO mapping for this tenant."""


class PhiLeakBlocked(PermanentError):
    """An outbound payload carried a field outside the allow-list; it was not sent."""
