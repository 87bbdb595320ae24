"""QBO faults as qbsync error kinds. Classification by HTTP status and fault code, never message text."""

from __future__ import annotations

from typing import Any

from shared.domain.errors import ErrorKind, PermanentError, ReconnectNeeded, RetryableError

# Permanent faults and the plain-words fix shown to ops.
SUGGESTED_FIXES: dict[str, str] = {
    "610": "A referenced customer, item or account is inactive or deleted in QuickBooks: reactivate it or remap.",
    "620": "The payment and the invoice belong to different QuickBooks customers: check the patient link.",
    "2020": "A required field is missing in the document qbsync built: check the tenant's mappings.",
    "2050": "A text field is too long for QuickBooks: shorten the memo or description on the platform.",
    "2500": "A mapping points at a QuickBooks list entry that no longer exists: refresh lists and remap.",
    "6000": "QuickBooks rejected the document (see detail): fix the cause in QuickBooks or the platform, then retry.",
    "6070": "A line amount does not equal quantity x rate: check units and unit prices on the platform.",
    "6140": "The document number is already used in QuickBooks: rename the other document or change the prefix.",
    "6190": "The QuickBooks subscription is not active: renew it, then retry.",
    "6210": "The books are closed for this date: change the closing date in QuickBooks or post in an open period.",
    "6240": "The name is used by another customer, vendor or employee in QuickBooks: rename or match the customer.",
    "6540": "The payment is in a bank deposit: remove it from the deposit in QuickBooks, then retry.",
    "120": "The user who connected QuickBooks is no longer an admin: reconnect with an admin account.",
    "3100": "The app is not authorised for this company: reconnect QuickBooks.",
}
RETRYABLE_CODES = {"5010", "3001", "3003"}


class QboFault(Exception):
    """A QBO answer that is not success. ``uncertain`` means a write may have committed."""

    kind: ErrorKind = ErrorKind.PERMANENT

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        detail: str = "",
        http_status: int = 0,
        intuit_tid: str = "",
        uncertain: bool = False,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.detail = detail
        self.http_status = http_status
        self.intuit_tid = intuit_tid
        self.uncertain = uncertain
        self.errors = errors or []

    @property
    def suggested_fix(self) -> str:
        return SUGGESTED_FIXES.get(self.code, "See the QuickBooks detail; fix the cause, then retry.")

    def as_error(self) -> RetryableError | PermanentError | ReconnectNeeded:
        """The qbsync error of the matching kind, carrying code, detail and intuit_tid."""
        cls: type[RetryableError | PermanentError | ReconnectNeeded] = PermanentError
        if self.kind == ErrorKind.RETRYABLE:
            cls = RetryableError
        elif self.kind == ErrorKind.RECONNECT:
            cls = ReconnectNeeded
        return cls(
            self.message,
            suggested_fix=self.suggested_fix if self.kind == ErrorKind.PERMANENT else "",
            qbo_code=self.code or None,
            qbo_detail=self.detail or None,
            http_status=self.http_status or None,
            intuit_tid=self.intuit_tid or None,
        )


class QboRetryable(QboFault):
    """Throttle, 5xx, timeout, connection reset, stale SyncToken (5010)."""

    kind = ErrorKind.RETRYABLE


class QboThrottled(QboRetryable):
    """HTTP 429 / fault 3001 (or the historic 403 ThrottleExceeded)."""


class QboStale(QboRetryable):
    """5010: re-read by Id, re-apply, retry."""


class QboUnauthorized(QboRetryable):
    """401: refresh the access token once and retry."""


class QboPermanent(QboFault):
    kind = ErrorKind.PERMANENT


class QboNotFound(QboPermanent):
    """610 / 404 on a read by Id."""


class QboReconnect(QboFault):
    """invalid_grant or 120/3100: the company must be reconnected; work is held."""

    kind = ErrorKind.RECONNECT


def classify(http_status: int, errors: list[dict[str, Any]], intuit_tid: str = "") -> QboFault:
    """Build the right fault from an HTTP status and a QBO ``Fault.Error`` list."""
    first = errors[0] if errors else {}
    code = str(first.get("code", ""))
    message = str(first.get("Message") or first.get("message") or f"HTTP {http_status}")
    detail = str(first.get("Detail") or first.get("detail") or "")
    kw: dict[str, Any] = {
        "code": code,
        "detail": detail,
        "http_status": http_status,
        "intuit_tid": intuit_tid,
        "errors": errors,
    }
    if http_status == 429 or code == "3001" or "ThrottleExceeded" in message:
        return QboThrottled(message, **kw)
    if http_status == 401:
        return QboUnauthorized(message, **kw)
    if code in {"120", "3100"}:
        return QboReconnect(message, **kw)
    if code == "5010":
        return QboStale(message, **kw)
    if http_status >= 500 or code in RETRYABLE_CODES:
        return QboRetryable(message, uncertain=http_status >= 500, **kw)
    if code == "610" or http_status == 404:
        return QboNotFound(message, **kw)
    return QboPermanent(message, **kw)
