"""QuickBooks connection rules: token sets, connection health, the company summary, OAuth state checks.

Pure: no I/O. Token values never appear in ``repr`` / ``str`` (they would end up in logs and tracebacks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from shared.domain.errors import BadRequest

ConnectionStatus = Literal["connected", "needs_reconnect", "disconnected"]
STATE_TTL = timedelta(minutes=10)
HARD_EXPIRY_WARNING = timedelta(days=30)
ACCOUNTING_SCOPE = "com.intuit.quickbooks.accounting"


@dataclass(frozen=True)
class TokenSet:
    """One realm's tokens as stored in its secret. Times are epoch seconds."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    access_expires_at: float
    refresh_expires_at: float
    refresh_hard_expires_at: float | None = None
    token_version: int = 0

    def access_valid(self, now: float, margin_s: float = 0.0) -> bool:
        return bool(self.access_token) and now < self.access_expires_at - margin_s

    def to_secret(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "access_expires_at": self.access_expires_at,
            "refresh_expires_at": self.refresh_expires_at,
            "refresh_hard_expires_at": self.refresh_hard_expires_at,
            "token_version": self.token_version,
        }

    @classmethod
    def from_secret(cls, value: dict[str, Any]) -> TokenSet | None:
        """None when the secret holds no usable tokens (never connected, or disconnected)."""
        if not value.get("refresh_token"):
            return None
        hard = value.get("refresh_hard_expires_at")
        return cls(
            access_token=str(value.get("access_token") or ""),
            refresh_token=str(value["refresh_token"]),
            access_expires_at=float(value.get("access_expires_at") or 0),
            refresh_expires_at=float(value.get("refresh_expires_at") or 0),
            refresh_hard_expires_at=float(hard) if hard is not None else None,
            token_version=int(value.get("token_version") or 0),
        )

    @classmethod
    def from_token_response(cls, body: dict[str, Any], *, now: float, version: int) -> TokenSet:
        """From Intuit's token response (``expires_in``, ``x_refresh_token_expires_in``,
        ``x_refresh_token_hard_expires_in`` are relative seconds)."""
        hard = body.get("x_refresh_token_hard_expires_in")
        return cls(
            access_token=str(body["access_token"]),
            refresh_token=str(body["refresh_token"]),
            access_expires_at=now + float(body.get("expires_in") or 3600),
            refresh_expires_at=now + float(body.get("x_refresh_token_expires_in") or 8_726_400),
            refresh_hard_expires_at=now + float(hard) if hard else None,
            token_version=version,
        )


@dataclass(frozen=True)
class Connection:
    realm_id: str
    status: str
    company: dict[str, Any]
    token_version: int = 0
    refresh_expires_at: float | None = None
    refresh_hard_expires_at: float | None = None
    connected_at: str | None = None
    last_sync_at: str | None = None
    throttled_at: str | None = None
    updated_at: str | None = None

    @property
    def is_connected(self) -> bool:
        return self.status == "connected"

    def health(self, now: datetime) -> dict[str, Any]:
        """What ops sees: status, hard-expiry date with a warning 30 days ahead, last sync, throttling."""
        hard = datetime.fromtimestamp(self.refresh_hard_expires_at, UTC) if self.refresh_hard_expires_at else None
        warnings: list[str] = []
        if self.status == "needs_reconnect":
            warnings.append("QuickBooks access was lost: reconnect via GET /oauth/connect?tenant=<tenant>")
        if hard is not None and self.status == "connected" and hard - now <= HARD_EXPIRY_WARNING:
            warnings.append(f"the QuickBooks authorization ends on {hard.date().isoformat()}: reconnect before then")
        return {
            "realm_id": self.realm_id,
            "company_name": self.company.get("CompanyName"),
            "status": self.status,
            "refresh_hard_expires_on": hard.date().isoformat() if hard else None,
            "warnings": warnings,
            "last_sync_at": self.last_sync_at,
            "throttled_at": self.throttled_at,
            "connected_at": self.connected_at,
        }


# The Preferences fields the sync engine reads (qbo-api.md §8.6), flattened onto ConnectionItem.company.
_PREFS: dict[str, tuple[str, str]] = {
    "ClassTrackingPerTxn": ("AccountingInfoPrefs", "ClassTrackingPerTxn"),
    "ClassTrackingPerTxnLine": ("AccountingInfoPrefs", "ClassTrackingPerTxnLine"),
    "TrackDepartments": ("AccountingInfoPrefs", "TrackDepartments"),
    "BookCloseDate": ("AccountingInfoPrefs", "BookCloseDate"),
    "CustomTxnNumbers": ("SalesFormsPrefs", "CustomTxnNumbers"),
    "AllowDiscount": ("SalesFormsPrefs", "AllowDiscount"),
    "UsingSalesTax": ("TaxPrefs", "UsingSalesTax"),
    "PartnerTaxEnabled": ("TaxPrefs", "PartnerTaxEnabled"),
}


def company_summary(company_info: dict[str, Any], preferences: dict[str, Any]) -> dict[str, Any]:
    """The connection's company summary: name, country and the preferences that shape documents."""
    out: dict[str, Any] = {
        "CompanyName": company_info.get("CompanyName"),
        "Country": company_info.get("Country"),
    }
    for key, (section, name) in _PREFS.items():
        out[key] = (preferences.get(section) or {}).get(name)
    return out


class OAuthStateInvalid(BadRequest):
    """The callback's ``state`` is unknown (forged), expired or already used (replayed)."""

    def __init__(self, reason: Literal["forged", "expired", "replayed", "missing"]) -> None:
        text = {
            "forged": "This sign-in link was not issued by qbsync.",
            "expired": "This sign-in link has expired (they last 10 minutes).",
            "replayed": "This sign-in link has already been used.",
            "missing": "The QuickBooks answer is incomplete (code, state or company id missing).",
        }[reason]
        super().__init__(text, field="state", reason=reason)
        self.reason = reason


def check_state_age(created_at: datetime, now: datetime) -> None:
    """Raises OAuthStateInvalid('expired') when a state is older than its 10-minute life."""
    if now - created_at > STATE_TTL:
        raise OAuthStateInvalid("expired")
