"""Deterministic identifiers and customer display names. Pure functions (no I/O)."""

from __future__ import annotations

import base64
import hashlib
from typing import Literal

NamingPolicy = Literal["redacted", "initials", "full_name_with_consent"]


def short_hash(*parts: str, length: int = 5) -> str:
    """A stable, upper-case base32 digest of ``parts`` (no I, O, 0, 1 confusion: base32 alphabet)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return base64.b32encode(digest).decode().rstrip("=")[:length]


def request_id(tenant_id: str, object_key: str, slot: str, operation: str, version: int) -> str:
    """QBO ``requestid`` per (tenant, source object, document slot, operation, version): ≤ 36 chars so it
    also fits batch calls."""
    return "qs" + hashlib.sha256(f"{tenant_id}|{object_key}|{slot}|{operation}|{version}".encode()).hexdigest()[:34]


def doc_number(prefix: str, tenant_id: str, object_key: str, slot: str = "") -> str:
    """A deterministic DocNumber (≤ 21 chars, QBO's limit) for a source object's document."""
    body = short_hash(tenant_id, object_key, slot, length=10)
    return f"{prefix[:10]}{'-' if prefix and not prefix.endswith('-') else ''}{body}"[:21]


def marker(tenant_id: str, object_key: str, slot: str) -> str:
    """The ``PrivateNote`` marker that lets a read-back recognise qbsync's own document."""
    return f"qbsync:{short_hash(tenant_id, length=6)}:{object_key}:{slot}"


def customer_display_name(
    policy: NamingPolicy,
    tenant_id: str,
    patient_id: str,
    *,
    first_name: str | None = None,
    last_name: str | None = None,
    consent: bool = False,
    disambiguate: bool = False,
) -> str:
    """The QBO DisplayName for a patient under the tenant's naming policy.

    ``redacted`` (default) never contains the name: ``Patient 8F3K2``. ``initials`` gives ``A.L. 8F3K2``.
    ``full_name_with_consent`` uses the name only when the patient consented, else falls back to redacted.
    ``disambiguate`` appends the stable suffix used after a 6240 name collision with someone else's record.
    """
    tag = short_hash(tenant_id, patient_id)
    if policy == "full_name_with_consent" and consent and (first_name or last_name):
        name = " ".join(p.strip() for p in (first_name, last_name) if p and p.strip())
        base = name.replace(":", " ")[:90]
        return f"{base} ({tag})" if disambiguate else base
    if policy == "initials" and (first_name or last_name):
        initials = "".join(f"{p.strip()[0].upper()}." for p in (first_name, last_name) if p and p.strip())
        return f"{initials} {tag}" + (f"-{short_hash(patient_id, length=3)}" if disambiguate else "")
    return f"Patient {tag}" + (f"-{short_hash(patient_id, length=3)}" if disambiguate else "")


def billing_account_display_name(tenant_id: str, account_id: str, name: str | None, policy: NamingPolicy) -> str:
    """Parent customer for detailed billing; account names (offices, employers) are not PHI unless redacted."""
    tag = short_hash(tenant_id, "account", account_id)
    if policy != "redacted" and name:
        return f"{name.replace(':', ' ')[:80]} ({tag})"
    return f"Account {tag}"
