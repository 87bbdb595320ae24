"""QuickBooks change notifications: verify ``intuit-signature``, parse legacy and CloudEvents bodies.

Pure: no I/O, no clock. Both webhook formats (and CDC changes) become :class:`Notice` values with a dedupe key
that is stable across Intuit's retries:

* CloudEvents: ``ce:{id}`` (Intuit reuses the event ``id`` when it retries);
* legacy: ``lg:{entity}:{id}:{operation}:{lastUpdated}`` (the realm is part of the storage key);
* CDC: ``cdc:{entity}:{id}:{LastUpdatedTime}``.

A change seen both by webhook and by CDC has two keys; the change worker recognises the second one as already
applied because the ledger records the QBO ``LastUpdatedTime`` / ``SyncToken`` it has seen.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.domain.errors import BadRequest, Unauthorized

SIGNATURE_HEADER = "intuit-signature"

# Entity names as QBO spells them (CloudEvents types carry them lower-cased).
ENTITIES: tuple[str, ...] = (
    "Account",
    "Bill",
    "BillPayment",
    "Budget",
    "Class",
    "CreditMemo",
    "Currency",
    "Customer",
    "Department",
    "Deposit",
    "Employee",
    "Estimate",
    "Invoice",
    "Item",
    "JournalCode",
    "JournalEntry",
    "Payment",
    "PaymentMethod",
    "Preferences",
    "Purchase",
    "PurchaseOrder",
    "RefundReceipt",
    "SalesReceipt",
    "TaxAgency",
    "Term",
    "TimeActivity",
    "Transfer",
    "Vendor",
    "VendorCredit",
)
_BY_LOWER = {e.lower(): e for e in ENTITIES}
OPERATIONS: dict[str, str] = {
    "Create": "created",
    "Update": "updated",
    "Delete": "deleted",
    "Merge": "merged",
    "Void": "voided",
    "Emailed": "emailed",
}
_OP_BY_PAST = {v: k for k, v in OPERATIONS.items()}
# The entities the change worker acts on; notices for others are acknowledged and counted, not stored.
HANDLED: frozenset[str] = frozenset({"Invoice", "Payment", "Customer", "Item", "CreditMemo"})


@dataclass(frozen=True)
class Notice:
    realm_id: str
    entity: str
    entity_id: str
    operation: str  # Create | Update | Delete | Merge | Void | Emailed
    occurred_at: str  # as sent (legacy lastUpdated, CloudEvents time, CDC LastUpdatedTime)
    source: str  # webhook-legacy | webhook-cloudevents | cdc
    dedupe_key: str
    data: dict[str, Any] = field(default_factory=dict)  # deleted_id on merges; the full body for CDC

    @property
    def deleted_id(self) -> str | None:
        value = self.data.get("deleted_id")
        return str(value) if value else None


@dataclass(frozen=True)
class ParsedBody:
    notices: list[Notice]
    unknown: int  # events with an entity / operation qbsync does not know (acknowledged, counted)
    unhandled: int  # known entities qbsync does not act on (e.g. Vendor)


# ---------------------------------------------------------------- signature
def intuit_signature(body: bytes, verifier_token: str) -> str:
    """base64(HMAC-SHA256(key=verifier token, msg=raw body)) — what Intuit sends in ``intuit-signature``."""
    digest = hmac.new(verifier_token.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_signature(body: bytes, header: str | None, verifier_tokens: Sequence[str]) -> None:
    """Fail closed. Raises Unauthorized when the header is missing, no token is configured, or nothing matches."""
    if not header:
        raise Unauthorized("intuit-signature header is missing", field=SIGNATURE_HEADER)
    tokens = [t for t in verifier_tokens if t]
    if not tokens:
        raise Unauthorized("no webhook verifier token is configured", field=SIGNATURE_HEADER)
    found = False
    for token in tokens:
        found |= hmac.compare_digest(intuit_signature(body, token).encode(), header.strip().encode())
    if not found:
        raise Unauthorized("intuit-signature does not match the body", field=SIGNATURE_HEADER)


# ---------------------------------------------------------------- types
def cloudevent_type(entity: str, operation: str) -> str:
    """``("Invoice", "Update")`` → ``qbo.invoice.updated.v1``."""
    return f"qbo.{entity.lower()}.{OPERATIONS.get(operation, operation.lower())}.v1"


def parse_cloudevent_type(ce_type: str) -> tuple[str, str] | None:
    """``qbo.invoice.updated.v1`` → ``("Invoice", "Update")``; None for anything else."""
    parts = ce_type.split(".")
    if len(parts) != 4 or parts[0] != "qbo" or not parts[3].startswith("v"):
        return None
    entity, op = _BY_LOWER.get(parts[1]), _OP_BY_PAST.get(parts[2])
    if entity is None or op is None:
        return None
    return entity, op


# ---------------------------------------------------------------- bodies
def parse_body(body: bytes) -> ParsedBody:
    """Parse a webhook body in either format. Raises BadRequest for malformed JSON or an unknown shape."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest("body is not valid JSON") from exc
    if isinstance(doc, list):
        return _collect(_cloudevent(e) for e in doc)
    if isinstance(doc, dict) and isinstance(doc.get("eventNotifications"), list):
        return _collect(_legacy(doc["eventNotifications"]))
    if isinstance(doc, dict) and doc.get("specversion"):
        return _collect([_cloudevent(doc)])  # a single structured-mode event
    raise BadRequest("body is neither a CloudEvents array nor a legacy eventNotifications object")


def _collect(items: Iterable[Notice | None]) -> ParsedBody:
    notices: list[Notice] = []
    unknown = unhandled = 0
    for n in items:
        if n is None:
            unknown += 1
        elif n.entity not in HANDLED:
            unhandled += 1
        else:
            notices.append(n)
    return ParsedBody(notices, unknown, unhandled)


def _cloudevent(ev: Any) -> Notice | None:
    if not isinstance(ev, dict):
        return None
    parsed = parse_cloudevent_type(str(ev.get("type", "")))
    event_id, realm, ident = ev.get("id"), ev.get("intuitaccountid"), ev.get("intuitentityid")
    if parsed is None or not event_id or not realm or not ident:
        return None
    raw = ev.get("data")
    data: dict[str, Any] = raw if isinstance(raw, dict) else {}
    extra = {"deleted_id": str(data["deletedid"])} if data.get("deletedid") else {}
    return Notice(
        realm_id=str(realm),
        entity=parsed[0],
        entity_id=str(ident),
        operation=parsed[1],
        occurred_at=str(ev.get("time") or ""),
        source="webhook-cloudevents",
        dedupe_key=f"ce:{event_id}",
        data=extra,
    )


def _legacy(notifications: list[Any]) -> Iterable[Notice | None]:
    for note in notifications:
        if not isinstance(note, dict):
            yield None
            continue
        realm = str(note.get("realmId") or "")
        entities = (note.get("dataChangeEvent") or {}).get("entities") or []
        for ent in entities:
            if not isinstance(ent, dict):
                yield None
                continue
            entity = _BY_LOWER.get(str(ent.get("name", "")).lower())
            op = str(ent.get("operation", ""))
            ident, when = str(ent.get("id") or ""), str(ent.get("lastUpdated") or "")
            if not realm or entity is None or op not in OPERATIONS or not ident:
                yield None
                continue
            yield Notice(
                realm_id=realm,
                entity=entity,
                entity_id=ident,
                operation=op,
                occurred_at=when,
                source="webhook-legacy",
                dedupe_key=f"lg:{entity}:{ident}:{op}:{when}",
                data={"deleted_id": str(ent["deletedId"])} if ent.get("deletedId") else {},
            )


# ---------------------------------------------------------------- CDC
def cdc_notice(realm_id: str, entity: str, row: dict[str, Any]) -> Notice:
    """A CDC row as a notice. The full body travels in ``data["entity"]`` so the worker needs no read."""
    when = str((row.get("MetaData") or {}).get("LastUpdatedTime") or "")
    deleted = str(row.get("status", "")).lower() == "deleted"
    op = "Delete" if deleted else ("Void" if looks_voided(row) else "Update")
    ident = str(row.get("Id"))
    return Notice(
        realm_id=realm_id,
        entity=entity,
        entity_id=ident,
        operation=op,
        occurred_at=when,
        source="cdc",
        dedupe_key=f"cdc:{entity}:{ident}:{when}",
        data={} if deleted else {"entity": row},
    )


def looks_voided(row: dict[str, Any]) -> bool:
    # QBO marks a voided sales form only through its zeroed amounts and the "Voided" private note.
    return str(row.get("PrivateNote", "")).startswith("Voided") and _num(row.get("TotalAmt")) == 0


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


# ---------------------------------------------------------------- times
def parse_time(value: str | None) -> datetime | None:
    """An ISO-8601 time (``Z`` or offset, any precision) as an aware UTC datetime; None if unparseable."""
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)


def not_newer(change: str | None, recorded: str | None) -> bool:
    """True when ``change`` is at or before ``recorded`` at QBO's one-second precision (MetaData has no millis)."""
    c, r = parse_time(change), parse_time(recorded)
    if c is None or r is None:
        return False
    return c.replace(microsecond=0) <= r.replace(microsecond=0)


def token_not_newer(change: Any, recorded: Any) -> bool:
    """True when a QBO SyncToken ``change`` is at or before ``recorded`` (numeric compare)."""
    try:
        return int(str(change)) <= int(str(recorded))
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------- callbacks
CALLBACK_TYPES: tuple[str, ...] = (
    "invoice.updated_in_qbo",
    "invoice.voided_in_qbo",
    "invoice.deleted_in_qbo",
    "creditmemo.updated_in_qbo",
    "creditmemo.voided_in_qbo",
    "creditmemo.deleted_in_qbo",
    "payment.recorded_in_qbo",
    "payment.updated_in_qbo",
    "payment.voided_in_qbo",
    "payment.deleted_in_qbo",
    "customer.merged_in_qbo",
)


def callback(
    *,
    type: str,
    tenant_id: str,
    object_key: str,
    notice: Notice,
    qbo_id: str,
    version: str,
    data: dict[str, Any],
    created_at: str,
) -> dict[str, Any]:
    """The callback body (docs/qbo-to-platform.md). ``id`` is deterministic per (tenant, type, document, version),
    so the same QBO change always produces the same id and the platform can deduplicate on it."""
    if type not in CALLBACK_TYPES:
        raise ValueError(f"unknown callback type {type}")
    raw = "|".join((tenant_id, type, notice.realm_id, notice.entity, qbo_id, object_key, version))
    return {
        "id": "cb_" + hashlib.sha256(raw.encode()).hexdigest()[:32],
        "type": type,
        "tenant_id": tenant_id,
        "object_key": object_key,
        "realm_id": notice.realm_id,
        "qbo": {"entity": notice.entity, "id": qbo_id, "version": version},
        "occurred_at": notice.occurred_at,
        "created_at": created_at,
        "source": notice.source,
        "data": data,
    }
