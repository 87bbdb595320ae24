"""QuickBooks → platform: webhook intake, the change worker and the CDC sweep.

* :class:`WebhookIntake` (request path, no QBO call): verify ``intuit-signature`` → parse → store notices of
  realms some tenant is linked to (conditional put on the dedupe key) → answer.
* :class:`ChangeService` (stream of notice INSERTs): find the source object that owns the QBO document (reverse
  link index), drop echoes of qbsync's own writes, read the entity at most once (never for deletes, never for
  CDC notices, which carry the body), update the object's ``qbo[slot]`` facts and enqueue a signed callback.
* :class:`CdcSweep` (schedule): ``/cdc`` per realm from a stored cursor, same notices (source ``cdc``), and a
  drift report of documents whose QBO state differs from the ledger.

Conflict policy and callback contract: docs/qbo-to-platform.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from shared.adapters.dynamo import ObjectItem
from shared.adapters.notices import NoticeStore, OpsRecords, RealmTenants
from shared.adapters.qbo.types import QboApi
from shared.adapters.qbo_links import Link, ObjectSlots, QboLinks, link, link_all, unlink
from shared.domain import qbo_notices as qn
from shared.domain.errors import Unauthorized
from shared.domain.qbo_notices import Notice
from shared.domain.tenant import Tenant
from shared.observability import count, logger

ClientFactory = Callable[[str], QboApi]
DOCS = {"Invoice": ("invoice", "invoices"), "CreditMemo": ("creditmemo", "credits")}
CDC_ENTITIES = ["Invoice", "CreditMemo", "Payment", "Customer", "Item"]
LOOKBACK_LIMIT_S = 29 * 86400


class CallbackSink(Protocol):
    def enqueue(self, callback: dict[str, Any]) -> None: ...


class VerifierTokens(Protocol):
    def tokens(self, *, fresh: bool = False) -> Sequence[str]: ...


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _money(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value)).quantize(Decimal("0.01"))
    except (InvalidOperation, ValueError):
        return None


def _num(value: Any) -> float | None:
    m = _money(value)
    return float(m) if m is not None else None


# ================================================================== webhook intake
@dataclass(frozen=True)
class IntakeResult:
    stored: int
    duplicates: int
    unknown_realm: int
    ignored: int

    def body(self) -> dict[str, Any]:
        return {"status": "ok", "stored": self.stored, "duplicates": self.duplicates}


class WebhookIntake:
    def __init__(self, tokens: VerifierTokens, notices: NoticeStore, tenants: RealmTenants) -> None:
        self._tokens = tokens
        self._notices = notices
        self._tenants = tenants

    def receive(self, headers: dict[str, str], body: bytes) -> IntakeResult:
        """Verify, parse, store. Raises Unauthorized (401) first, BadRequest (400) for malformed JSON."""
        header = headers.get(qn.SIGNATURE_HEADER)
        try:
            qn.verify_signature(body, header, self._tokens.tokens())
        except Unauthorized:
            if not header:
                raise
            # The token may have just been rotated: one fresh read (cached ~1 s) before refusing.
            qn.verify_signature(body, header, self._tokens.tokens(fresh=True))
        parsed = qn.parse_body(body)
        ours = [n for n in parsed.notices if self._tenants.get(n.realm_id)]
        stored = sum(self._notices.put_many(ours)) if ours else 0
        return IntakeResult(
            stored, len(ours) - stored, len(parsed.notices) - len(ours), parsed.unknown + parsed.unhandled
        )


# ================================================================== change worker
@dataclass
class _Target:
    link: Link
    tenant: Tenant
    item: ObjectItem
    slot: dict[str, Any]


class ChangeService:
    def __init__(
        self,
        client_factory: ClientFactory,
        *,
        callbacks: CallbackSink,
        links: QboLinks | None = None,
        slots: ObjectSlots | None = None,
        tenants: RealmTenants | None = None,
        ops: OpsRecords | None = None,
    ) -> None:
        self._client_factory = client_factory
        self._clients: dict[str, QboApi] = {}
        self.callbacks = callbacks
        self.links = links or QboLinks()
        self.slots = slots or ObjectSlots()
        self.tenants = tenants or RealmTenants()
        self.ops = ops or OpsRecords()
        self.reads = 0  # metered QBO reads this service made
        # Read ahead for a batch of notices (``prefetched``); each entry serves one lookup.
        self._links: dict[tuple[str, str, str], list[Link]] = {}
        self._items: dict[tuple[str, str], ObjectItem] = {}

    @contextmanager
    def prefetched(self, notices: Iterable[Notice]) -> Iterator[None]:
        """Read the links and objects a batch of notices will look up in batch reads (a few calls for the
        batch instead of two reads per notice), for the ``handle`` calls inside the block. A prefetched value
        serves one lookup: a later lookup of the same object (a second notice, after the first may have written
        it) reads it again."""
        self._links = self.links.find_many({(n.realm_id, n.entity, n.entity_id) for n in notices})
        self._items = self.slots.get_many(
            {(ln.tenant_id, ln.object_key) for owners in self._links.values() for ln in owners}
        )
        try:
            yield
        finally:
            self._links, self._items = {}, {}

    def handle(self, notice: Notice) -> str:
        """Apply one notice. Returns the outcome (for the notice record, logs and tests).

        Raises RetryableError when the object is being synced or changed concurrently (retry the record) and
        QboFault for QBO failures (the stream retries, then the on-failure destination keeps the record).
        """
        if not self.tenants.get(notice.realm_id):
            return "no_tenant"
        if notice.entity in DOCS:
            return self._document(notice)
        if notice.entity == "Payment":
            return self._payment(notice)
        if notice.entity == "Customer":
            return self._customer(notice)
        if notice.entity == "Item":
            return self._item(notice)
        return "ignored"

    # ------------------------------------------------------------------ documents (Invoice, CreditMemo)
    def _document(self, n: Notice) -> str:
        kind, toggle = DOCS[n.entity]
        t = self._target(n.realm_id, n.entity, n.entity_id)
        if t is None:
            return "not_ours"
        if not getattr(t.tenant.settings.entities, toggle):
            return "disabled"
        slot = t.slot
        if slot.get("state") == "deleted":
            return "known"  # a delete is final; later notices for the id are history
        if n.operation == "Delete":
            new = {**slot, "state": "deleted", "deleted_in_qbo_at": n.occurred_at}
            data = {"qbo_id": n.entity_id, "doc_number": slot.get("doc_number"), "total": slot.get("total")}
            return self._apply(n, t, new, f"{kind}.deleted_in_qbo", "deleted", data)
        body = self._newer_body(n, slot)
        if body is None:
            return "echo"
        new = {
            **slot,
            "sync_token": str(body.get("SyncToken")),
            "last_updated": (body.get("MetaData") or {}).get("LastUpdatedTime") or n.occurred_at,
            "total": _num(body.get("TotalAmt")),
            "balance": _num(body.get("Balance")),
        }
        data = {
            "qbo_id": n.entity_id,
            "doc_number": body.get("DocNumber", slot.get("doc_number")),
            "total": new["total"],
            "balance": new["balance"],
            "previous": {"total": _num(slot.get("total")), "balance": _num(slot.get("balance"))},
        }
        if n.operation == "Void" or qn.looks_voided(body):
            if slot.get("state") == "voided":
                return self._apply(n, t, new, None, "known", {})
            return self._apply(n, t, {**new, "state": "voided"}, f"{kind}.voided_in_qbo", "voided", data)
        if _money(body.get("TotalAmt")) == _money(slot.get("total")) and _money(body.get("Balance")) != _money(
            slot.get("balance")
        ):
            # Only the balance moved: a payment or credit was applied; its own notice tells the platform.
            return self._apply(n, t, new, None, "balance", data)
        return self._apply(n, t, new, f"{kind}.updated_in_qbo", "updated", data, conflict_possible=True)

    # ------------------------------------------------------------------ payments
    def _payment(self, n: Notice) -> str:
        """A payment recorded in QuickBooks against our invoices, or a change to one qbsync knows. One of ours (a
        platform payment's document) has one owner. One recorded in QuickBooks has a slot ``payment:qbo:{id}`` on
        the object of each of our invoices it is applied to, each with its part; a change reaches them all, and an
        edit that moves the payment between invoices records it on the new ones and tells the old ones their part
        is 0. One metered read at most, however many invoices."""
        known = self._targets(n.realm_id, "Payment", n.entity_id)
        enabled = [t for t in known if t.tenant.settings.entities.payments]
        if known and not enabled:
            return "disabled"
        if n.operation == "Delete":
            return _first(self._payment_deleted(n, t) for t in enabled) if enabled else "not_ours"
        carried = isinstance(n.data.get("entity"), dict)
        # A webhook notice no newer than every slot's record is an echo, without the read (see _newer_body).
        fresh = [t for t in enabled if carried or not qn.not_newer(n.occurred_at, t.slot.get("last_updated"))]
        if enabled and not fresh:
            return "echo"
        body = self._body(n)
        applied = _applied_to_invoices(body)
        # Parts on our invoices are for a payment recorded in QuickBooks; one of ours has its own object.
        held = {str(t.slot.get("invoice_id")) for t in known if t.slot.get("origin") == "qbo"}
        ours = any(t.slot.get("origin") != "qbo" for t in known)
        parts = (
            [] if ours else [(i, amt, t) for i, amt in applied.items() if i not in held for t in self._invoice(n, i)]
        )
        if parts:
            # The link first: one that names a slot not yet written is passed over until it is (``_targets``).
            owners = [(t.link.tenant_id, t.link.object_key, t.link.slot) for t in known]
            owners += [(t.tenant.tenant_id, t.link.object_key, _part_slot(n.entity_id)) for _i, _a, t in parts]
            link_all(n.realm_id, "Payment", n.entity_id, owners)
        outcomes = [self._payment_changed(n, t, body, applied) if t in fresh else "echo" for t in enabled]
        outcomes += [self._payment_recorded(n, t, body, inv_id, amount) for inv_id, amount, t in parts]
        return _first(outcomes) if outcomes else "not_ours"

    def _invoice(self, n: Notice, inv_id: str) -> list[_Target]:
        """Our invoice ``inv_id``, if it is ours and its tenant takes payments."""
        return [t for t in self._targets(n.realm_id, "Invoice", inv_id) if t.tenant.settings.entities.payments][:1]

    def _payment_recorded(self, n: Notice, invoice: _Target, body: dict[str, Any], inv_id: str, amount: Any) -> str:
        slot_name = _part_slot(n.entity_id)
        link = Link(n.realm_id, "Payment", n.entity_id, invoice.tenant.tenant_id, invoice.link.object_key, slot_name)
        current = (invoice.item.qbo or {}).get(slot_name)
        if current:  # recorded before its link was (an interrupted notice, or a link that named one invoice only)
            return self._payment_changed(
                n, _Target(link, invoice.tenant, invoice.item, current), body, {inv_id: amount}
            )
        new = {
            "type": "Payment",
            "id": n.entity_id,
            "sync_token": str(body.get("SyncToken")),
            "last_updated": (body.get("MetaData") or {}).get("LastUpdatedTime") or n.occurred_at,
            "total": _num(amount),
            "state": "active",
            "origin": "qbo",
            "invoice_id": inv_id,
        }
        data = {
            "qbo_payment_id": n.entity_id,
            "qbo_invoice_id": inv_id,
            "amount": _num(amount),
            "payment_total": _num(body.get("TotalAmt")),
            "txn_date": body.get("TxnDate"),
            "invoice_object_key": invoice.link.object_key,
        }
        return self._apply(
            n, _Target(link, invoice.tenant, invoice.item, {}), new, "payment.recorded_in_qbo", "recorded", data
        )

    @staticmethod
    def _payment_data(n: Notice, t: _Target) -> dict[str, Any]:
        return {
            "qbo_payment_id": n.entity_id,
            "qbo_invoice_id": t.slot.get("invoice_id"),
            "amount": _num(t.slot.get("total")),
            "invoice_object_key": t.link.object_key,
        }

    def _payment_deleted(self, n: Notice, t: _Target) -> str:
        if t.slot.get("state") == "deleted":
            return "known"
        new = {**t.slot, "state": "deleted", "deleted_in_qbo_at": n.occurred_at}
        return self._apply(n, t, new, "payment.deleted_in_qbo", "deleted", self._payment_data(n, t))

    def _payment_changed(self, n: Notice, t: _Target, body: dict[str, Any], applied: dict[str, Decimal]) -> str:
        """A known payment's new version, for one of its owners. A part recorded against an invoice is what the
        payment now applies to that invoice (0 when an edit moved it off); a payment of ours is its total."""
        slot = t.slot
        if slot.get("state") == "deleted":
            return "known"
        if qn.token_not_newer(body.get("SyncToken"), slot.get("sync_token")):
            return "echo"
        invoice_id = slot.get("invoice_id")
        amount = applied.get(str(invoice_id), 0) if invoice_id else body.get("TotalAmt")
        new = {
            **slot,
            "sync_token": str(body.get("SyncToken")),
            "last_updated": (body.get("MetaData") or {}).get("LastUpdatedTime") or n.occurred_at,
            "total": _num(amount),
        }
        data = {**self._payment_data(n, t), "amount": new["total"], "previous_amount": _num(slot.get("total"))}
        if n.operation == "Void" or qn.looks_voided(body):
            return self._apply(n, t, {**new, "state": "voided"}, "payment.voided_in_qbo", "voided", data)
        return self._apply(n, t, new, "payment.updated_in_qbo", "updated", data)

    # ------------------------------------------------------------------ customers and items
    def _customer(self, n: Notice) -> str:
        if n.operation == "Merge" and n.deleted_id:
            return self._merge(n, n.deleted_id)
        t = self._target(n.realm_id, "Customer", n.entity_id)
        if t is None:
            return "not_ours"
        if n.operation == "Delete":  # QBO "deletes" a customer by making it inactive
            self._warn(t, n, "customer_deactivated", n.occurred_at)
            return self._apply(n, t, {**t.slot, "state": "inactive"}, None, "warned", {})
        body = self._newer_body(n, t.slot)
        if body is None:
            return "echo"
        new = {
            **t.slot,
            "sync_token": str(body.get("SyncToken")),
            "last_updated": (body.get("MetaData") or {}).get("LastUpdatedTime") or n.occurred_at,
        }
        if body.get("Active") is False and t.slot.get("state") != "inactive":
            self._warn(t, n, "customer_deactivated", str(body.get("SyncToken")))
            return self._apply(n, t, {**new, "state": "inactive"}, None, "warned", {})
        return self._apply(n, t, new, None, "updated", {})

    def _merge(self, n: Notice, gone: str) -> str:
        survivor = n.entity_id
        t = self._target(n.realm_id, "Customer", gone)
        if t is None:
            return "not_ours"
        if str(t.slot.get("id")) == survivor:
            return "known"
        body = self._body(n)  # the surviving customer: its SyncToken is needed for later updates
        new = {
            **t.slot,
            "id": survivor,
            "sync_token": str(body.get("SyncToken")),
            "last_updated": (body.get("MetaData") or {}).get("LastUpdatedTime") or n.occurred_at,
            "merged_from": gone,
        }
        data = {"merged_away_id": gone, "surviving_id": survivor, "patient_object_key": t.link.object_key}
        outcome = self._apply(n, t, new, "customer.merged_in_qbo", "merged", data, version=f"merge:{gone}")
        link(n.realm_id, "Customer", survivor, t.tenant.tenant_id, t.link.object_key, t.link.slot)
        unlink(n.realm_id, "Customer", gone)
        return outcome

    def _item(self, n: Notice) -> str:
        body = self._body(n) if n.operation != "Delete" else {"Id": n.entity_id, "Active": False}
        if body.get("Active") is not False:
            return "ignored"
        warned = 0
        for tenant in self.tenants.get(n.realm_id):
            mapped = set(tenant.mappings.services.values())
            if {str(body.get("Id")), str(body.get("Name")), str(body.get("FullyQualifiedName"))} & mapped:
                self.ops.audit(
                    tenant.tenant_id,
                    "qbo_mapping_warning",
                    f"Item:{n.entity_id}",
                    {
                        "entity": "Item",
                        "qbo_id": n.entity_id,
                        "name": body.get("Name"),
                        "reason": "item_deactivated",
                        "suggested_fix": "reactivate the item in QuickBooks or map the service to another item "
                        "(qbsync mappings set services <code> <item>)",
                    },
                    key=f"warn:Item:{n.entity_id}:{body.get('SyncToken', n.occurred_at)}",
                )
                count("QboMappingWarning", entity="Item")
                warned += 1
        return "warned" if warned else "ignored"

    # ------------------------------------------------------------------ helpers
    def _target(self, realm: str, entity: str, qbo_id: str) -> _Target | None:
        return next(iter(self._targets(realm, entity, qbo_id)), None)

    def _targets(self, realm: str, entity: str, qbo_id: str) -> list[_Target]:
        """The objects holding a QBO document now (one, but for a QBO payment applied to several of our invoices);
        a stale link (the document replaced or relinked) is left out."""
        owners = self._links.pop((realm, entity, qbo_id), None) or self.links.find_all(realm, entity, qbo_id)
        out: list[_Target] = []
        for ln in owners:
            tenant = next((t for t in self.tenants.get(realm) if t.tenant_id == ln.tenant_id), None)
            if tenant is None:
                continue
            key = (ln.tenant_id, ln.object_key)
            item = self._items.pop(key, None) or self.slots.get(*key)
            slot = (item.qbo or {}).get(ln.slot) if item is not None else None
            if item is not None and isinstance(slot, dict) and str(slot.get("id")) == qbo_id:
                out.append(_Target(ln, tenant, item, slot))
        return out

    def _newer_body(self, n: Notice, slot: dict[str, Any]) -> dict[str, Any] | None:
        """The entity as QBO has it now, or None when the ledger already holds this version (an echo of our own
        write, or old news). The SyncToken decides. For a notice without the body (webhooks) a change at or
        before the recorded LastUpdatedTime is taken as an echo without spending a metered read; a notice that
        carries its body (CDC) is always compared by SyncToken, so a QBO user's edit made in the same second as
        our write is not lost (the CDC sweep then catches what a webhook took for an echo)."""
        if not isinstance(n.data.get("entity"), dict) and qn.not_newer(n.occurred_at, slot.get("last_updated")):
            return None
        body = self._body(n)
        if qn.token_not_newer(body.get("SyncToken"), slot.get("sync_token")):
            return None
        return body

    def _body(self, n: Notice) -> dict[str, Any]:
        """The entity as QBO has it now: the CDC body when the notice carries one, else one metered read."""
        carried = n.data.get("entity")
        if isinstance(carried, dict):
            return carried
        client = self._clients.get(n.realm_id)
        if client is None:
            client = self._clients[n.realm_id] = self._client_factory(n.realm_id)
        self.reads += 1
        count("QboNoticeReads")
        return client.read(n.entity, n.entity_id)

    def _apply(
        self,
        n: Notice,
        t: _Target,
        new_slot: dict[str, Any],
        cb_type: str | None,
        outcome: str,
        data: dict[str, Any],
        *,
        conflict_possible: bool = False,
        version: str | None = None,
    ) -> str:
        """Enqueue the callback (if any), then store the slot. The callback goes first: if the write then
        fails, the retried notice sends the same callback id again (the platform dedupes) rather than none."""
        item = t.item
        if conflict_possible and item.dirty and int(item.desired_version) > int(item.synced_version):
            detail = {
                "entity": n.entity,
                "qbo_id": n.entity_id,
                "qbo_sync_token": new_slot.get("sync_token"),
                "desired_version": int(item.desired_version),
                "policy": "platform owns lines, amounts and dates of documents it created; the pending sync "
                "will apply the platform's version",
            }
            self.ops.audit(
                t.tenant.tenant_id,
                "qbo_conflict",
                t.link.object_key,
                detail,
                key=f"conflict:{n.entity}:{n.entity_id}:{new_slot.get('sync_token')}",
            )
            new_slot = {**new_slot, "conflict": {"at": _now_iso(), **detail}}
            data = {**data, "conflict": True}
            count("QboConflict")
            logger().warning("qbo conflict", extra={"object_key": t.link.object_key, "entity": n.entity})
        if cb_type and t.tenant.settings.direction != "to_qbo" and t.tenant.callback_url:
            self.callbacks.enqueue(
                qn.callback(
                    type=cb_type,
                    tenant_id=t.tenant.tenant_id,
                    object_key=t.link.object_key,
                    notice=n,
                    qbo_id=str(new_slot.get("id", n.entity_id)),
                    version=version or f"{new_slot.get('state', 'active')}:{new_slot.get('sync_token')}",
                    data=data,
                    created_at=_now_iso(),
                )
            )
            count("CallbackEnqueued", type=cb_type)
        qbo = dict(item.qbo or {})
        qbo[t.link.slot] = {k: v for k, v in new_slot.items() if v is not None}
        self.slots.write(item, qbo)
        return outcome

    def _warn(self, t: _Target, n: Notice, reason: str, version: str) -> None:
        self.ops.audit(
            t.tenant.tenant_id,
            "qbo_mapping_warning",
            t.link.object_key,
            {
                "entity": n.entity,
                "qbo_id": n.entity_id,
                "reason": reason,
                "suggested_fix": "reactivate the customer in QuickBooks, or link the patient to another customer",
            },
            key=f"warn:{n.entity}:{n.entity_id}:{version}",
        )
        count("QboMappingWarning", entity=n.entity)


def _part_slot(payment_id: str) -> str:
    """The slot of a payment recorded in QuickBooks on the object of an invoice it pays."""
    return f"payment:qbo:{payment_id}"


_OUTCOME_ORDER = ("recorded", "deleted", "voided", "updated")


def _first(outcomes: Iterable[str]) -> str:
    """One outcome for a notice that changed several objects: the weightiest, else the first (all alike)."""
    seen = list(outcomes)
    return next((o for o in _OUTCOME_ORDER if o in seen), seen[0])


def _applied_to_invoices(payment: dict[str, Any]) -> dict[str, Decimal]:
    """What a payment applies to each invoice (QBO Id → amount; lines to the same invoice add up)."""
    out: dict[str, Decimal] = {}
    for line in payment.get("Line") or []:
        for txn in line.get("LinkedTxn") or []:
            if txn.get("TxnType") == "Invoice" and txn.get("TxnId"):
                inv = str(txn["TxnId"])
                out[inv] = out.get(inv, Decimal(0)) + (_money(line.get("Amount")) or Decimal(0))
    return out


# ================================================================== CDC sweep
class CdcSweep:
    def __init__(
        self,
        client_factory: ClientFactory,
        *,
        notices: NoticeStore | None = None,
        links: QboLinks | None = None,
        slots: ObjectSlots | None = None,
        tenants: RealmTenants | None = None,
        ops: OpsRecords | None = None,
        margin_s: float = 300.0,
        cap: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client_factory = client_factory
        self.notices = notices or NoticeStore()
        self.links = links or QboLinks()
        self.slots = slots or ObjectSlots()
        self.tenants = tenants or RealmTenants()
        self.ops = ops or OpsRecords()
        self.margin_s = margin_s
        self.cap = cap
        self.clock = clock

    def run(self) -> dict[str, Any]:
        """Sweep every realm some active tenant is linked to. Returns {realm: report}."""
        return {realm: self.sweep_realm(realm) for realm in sorted(self.tenants.all_realms())}

    def sweep_realm(self, realm: str) -> dict[str, Any]:
        """Raises QboFault if QBO refuses (the cursor then stays where it was)."""
        now = self.clock()
        floor = now - LOOKBACK_LIMIT_S
        cursor = self.ops.cursor(realm)
        since = max((cursor if cursor is not None else floor) - self.margin_s, floor)
        client = self._client_factory(realm)
        changes, calls, exhausted = self._changes(client, datetime.fromtimestamp(since, UTC))
        drift: list[dict[str, Any]] = []
        new = 0
        for entity, row in changes:
            notice = qn.cdc_notice(realm, entity, row)
            worth, entry = self._assess(realm, entity, row)
            if entry is not None:
                drift.append(entry)
            if worth and self.notices.put(notice):
                new += 1
        report = {
            "realm_id": realm,
            "since": datetime.fromtimestamp(since, UTC).isoformat(),
            "until": datetime.fromtimestamp(now, UTC).isoformat(),
            "cdc_calls": calls,
            "changes": len(changes),
            "notices_new": new,
            "drift": drift,
            "window_exhausted": exhausted,
            "generated_at": _now_iso(),
        }
        self.ops.save_drift(realm, report)
        if not exhausted:
            self.ops.advance_cursor(realm, now)
        count("CdcChanges", len(changes))
        count("CdcDrift", len(drift))
        return report

    def _changes(self, client: QboApi, since: datetime) -> tuple[list[tuple[str, dict[str, Any]]], int, bool]:
        """Every change since ``since``. A response at the cap is re-asked per entity with the window moved
        up to the newest LastUpdatedTime seen (QBO orders by it), until a response comes back under the cap."""
        got = client.cdc(CDC_ENTITIES, since)
        calls = 1
        if sum(len(v) for v in got.values()) < self.cap:
            return [(e, r) for e in CDC_ENTITIES for r in got.get(e, [])], calls, False
        out: list[tuple[str, dict[str, Any]]] = []
        exhausted = False
        for entity in CDC_ENTITIES:
            start, seen = since, set[tuple[str, str]]()
            while True:
                rows = client.cdc([entity], start).get(entity, [])
                calls += 1
                for r in rows:
                    key = (str(r.get("Id")), str((r.get("MetaData") or {}).get("LastUpdatedTime")))
                    if key not in seen:
                        seen.add(key)
                        out.append((entity, r))
                if len(rows) < self.cap:
                    break
                times = [qn.parse_time((r.get("MetaData") or {}).get("LastUpdatedTime")) for r in rows]
                latest = max((t for t in times if t is not None), default=None)
                if latest is None or latest <= start:
                    exhausted = True  # more than `cap` changes share one second: report it, keep the cursor
                    break
                start = latest
        return out, calls, exhausted

    def _assess(self, realm: str, entity: str, row: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        """(store a notice?, drift entry or None) for one CDC row."""
        deleted = str(row.get("status", "")).lower() == "deleted"
        qbo_id = str(row.get("Id"))
        ln = self.links.find(realm, entity, qbo_id)
        if ln is None:
            if entity == "Payment" and not deleted:
                return bool(_applied_to_invoices(row)), None
            if entity == "Item":
                return row.get("Active") is False, None
            return False, None
        item = self.slots.get(ln.tenant_id, ln.object_key)
        slot = (item.qbo or {}).get(ln.slot) if item is not None else None
        if item is None or not isinstance(slot, dict) or str(slot.get("id")) != qbo_id:
            return False, None
        base = {"entity": entity, "qbo_id": qbo_id, "tenant_id": ln.tenant_id, "object_key": ln.object_key}
        ledger = {"sync_token": slot.get("sync_token"), "total": _num(slot.get("total")), "state": slot.get("state")}
        if deleted:
            if slot.get("state") == "deleted":
                return False, None
            return True, {**base, "kind": "missing_in_qbo", "ledger": ledger}
        if slot.get("state") == "deleted":
            return False, {**base, "kind": "deleted_in_ledger_only", "ledger": ledger}
        same_token = qn.token_not_newer(row.get("SyncToken"), slot.get("sync_token"))
        same_total = entity not in DOCS or _money(row.get("TotalAmt")) == _money(slot.get("total"))
        if same_token and same_total:
            return False, None
        qbo = {"sync_token": str(row.get("SyncToken")), "total": _num(row.get("TotalAmt"))}
        return not same_token, {**base, "kind": "changed_in_qbo", "ledger": ledger, "qbo": qbo}
