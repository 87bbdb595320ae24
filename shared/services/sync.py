"""The sync engine: stored events → desired state → QBO documents, exactly once.

Level-triggered. A stream record of an *event* applies it to its object's desired state (if newer); a
stream record of a *dirty object* reconciles that object with QBO: for each document slot the planner
decides create / update / void / delete / nothing, and the executor performs it with

* a deterministic ``requestid`` per (tenant, object, slot, operation, version),
* the write intent recorded on the object before the call,
* a read-back (DocNumber, DisplayName or PrivateNote marker) before any re-create after an uncertain outcome,
* the QBO Id stored the moment it is known.

Outcomes: synced, skipped (rule named), waiting (prerequisite named; woken when it syncs), held (connection
needs reconnect), retrying (backoff; the retry sweep wakes it), failed (failure record + DLQ message with the
QBO fault and a suggested fix).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from shared.adapters import qbo_links
from shared.adapters.dlq import DeadLetters
from shared.adapters.dynamo import ConnectionItem, EventItem, Mapper, ObjectItem, TenantItem, bind_table
from shared.adapters.objects import TRANSACT_MAX, Apply, LeaseLost, ObjectRepository, slot_intents
from shared.adapters.qbo.coalesce import Workers
from shared.adapters.qbo.faults import QboFault, QboNotFound, QboStale
from shared.adapters.qbo.types import QboApi
from shared.adapters.refs import RefCache, escape_query_value
from shared.adapters.tenants import tenant_from_item
from shared.config import get_settings
from shared.domain import documents as docs
from shared.domain import naming
from shared.domain.errors import (
    ErrorKind,
    MissingMapping,
    PermanentError,
    QbsyncError,
    ReconnectNeeded,
    RetryableError,
    WaitingOnDependency,
)
from shared.domain.event_types import EventType, lifecycle_for
from shared.domain.failures import failure_kind
from shared.domain.phi import check_payload
from shared.domain.planner import SlotPlan, before_start_date, plan_slot, wants_invoice
from shared.domain.tenant import Tenant, TenantMappings
from shared.observability import count, logger
from shared.services.money import MoneySync
from shared.services.outcome import Outcome

MAX_ATTEMPTS = 8
CONNECTION_TTL_S = 5.0
MAX_SLOT_WRITERS = 30  # a batch call's worth of one object's documents written at once
T = TypeVar("T")
TRANSACT_MIN = 10  # objects from which a batch's events are applied in transactions (apply_events)
ClientFactory = Callable[[str], QboApi]
Follow = Callable[[], bool]  # may this worker take one more object of the realm now?
Lookup = tuple[str, str | None] | str


def intent_for(item: ObjectItem, slot: str) -> dict[str, Any] | None:
    return slot_intents(item).get(slot)


def has_marker(text: str, marker: str) -> bool:
    """The marker, whole (``...:apply:1.1`` must not match ``...:apply:1.10``)."""
    return re.search(re.escape(marker) + r"(?![\w.\-])", text) is not None


@dataclass
class Ctx:
    """What reconciling one object needs: the tenant, its realm's client and company preferences."""

    tenant: Tenant
    client: QboApi
    prefs: docs.CompanyPrefs
    forbidden: list[str] = field(default_factory=list)
    # Ledger objects read by this reconcile (patients, visits money goes to): read once, or prefetched in batches.
    read: dict[str, ObjectItem | None] = field(default_factory=dict)


def _apply(event: EventItem, park_in: tuple[str, int] | None) -> Apply:
    """What applying ``event`` writes: the lifecycle its type leaves the object in, the object's kind."""
    return Apply(event, lifecycle_for(EventType(event.type)), event.object_key.split(":", 1)[0], park_in)


def _together(
    items: list[T], write: Callable[[list[T]], list[str | None]], written: Callable[[T], None], map_: Mapper
) -> None:
    """``write`` the items in transactions of up to 100 (``map_`` runs them; each touches its own objects),
    ``written`` called for each item written. A transaction one item refused is tried once more without the items
    that refused it; those, and the items of a transaction refused twice, are left to the caller."""

    def run(chunk: list[T]) -> None:
        for _attempt in range(2):
            refused = write(chunk)
            if not any(refused):
                for item in chunk:
                    written(item)
                return
            chunk = [item for item, why in zip(chunk, refused, strict=True) if why == "Cancelled"]
            count("SyncTogetherRefused", len(refused) - len(chunk))
            if not chunk:
                return

    list(map_(run, [items[i : i + TRANSACT_MAX] for i in range(0, len(items), TRANSACT_MAX)]))


class SyncService:
    def __init__(
        self,
        client_factory: ClientFactory,
        *,
        objects: ObjectRepository | None = None,
        refs: RefCache | None = None,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        bind_table()
        self.objects = objects or ObjectRepository()
        self.refs = refs or RefCache()
        self.dlq = dead_letters or DeadLetters()
        self._client_factory = client_factory
        self._clients: dict[str, QboApi] = {}
        self._tenants: dict[str, tuple[float, Tenant]] = {}
        self._connections: dict[str, tuple[float, ConnectionItem]] = {}
        # Reconciles run concurrently (one per worker thread): per-reconcile state is thread-local.
        self._local = threading.local()
        self._clients_lock = threading.Lock()
        self.money = MoneySync(self)

    @property
    def _progress(self) -> int:
        """QBO documents stored by the reconcile in progress on this thread."""
        return int(getattr(self._local, "progress", 0))

    @_progress.setter
    def _progress(self, value: int) -> None:
        self._local.progress = value

    # ================================================================ stream entry points
    def apply_event(
        self,
        event: EventItem,
        *,
        park_in: tuple[str, int] | None = None,
        marks: list[EventItem] | None = None,
    ) -> bool:
        """Apply a stored event to its object's desired state (only if newer). Returns False if stale.

        ``park_in`` (realm, TTL): the object joins that realm's queue in the same write, unless a lease is on it
        (``ObjectRepository.apply_event_parked``). ``marks``: the event, its outcome (applied / stale) set, is added
        here for the caller to write back with others (``dynamo.save_all``) instead of the outcome being written
        now."""
        a = _apply(event, park_in)
        parked = park_in is not None and self.objects.apply_event_parked(event, a.lifecycle, a.kind, *park_in)
        applied = parked or self.objects.apply_event(event, a.lifecycle, a.kind)
        self._record(event, "applied" if applied else "stale", marks, parked=parked)
        return applied

    def apply_events(
        self,
        batch: Sequence[tuple[EventItem, tuple[str, int] | None]],
        marks: list[EventItem],
        done: set[str],
        map_: Mapper = map,
    ) -> None:
        """Apply many events at once: the newest event of each object goes in transactions of up to 100 objects
        (``ObjectRepository.apply_together``) instead of one conditional write each. Below ``TRANSACT_MIN``
        objects nothing is done (a transactional write costs twice the write units of a plain one; a few events
        save little).

        Each entry is an event and its ``park_in`` (see ``apply_event``); outcomes go to ``marks``. An event older
        than one applied here to the same object is stale without a write. The ids of the events done are added to
        ``done`` as they are (also when a later transaction raises); the caller applies the others one at a time
        with ``apply_event`` (an event whose own condition failed: stale, or a parked apply to a leased object; or
        a transaction that failed twice). ``map_`` runs the transactions (a thread pool's sends them side by
        side: each touches its own objects)."""
        newest: dict[tuple[str, str], tuple[EventItem, tuple[str, int] | None]] = {}
        for event, park_in in batch:
            key = (event.tenant_id, event.object_key)
            if key not in newest or int(event.version) > int(newest[key][0].version):
                newest[key] = (event, park_in)
        if len(newest) < TRANSACT_MIN:
            return
        todo = [_apply(event, park_in) for event, park_in in newest.values()]

        def written(a: Apply) -> None:
            self._record(a.event, "applied", marks, parked=a.park is not None)
            done.add(a.event.event_id)

        _together(todo, self.objects.apply_together, written, map_)
        for event, _park in batch:
            applied = newest[(event.tenant_id, event.object_key)][0]
            if event.event_id not in done and applied.event_id in done and int(event.version) < int(applied.version):
                self._record(event, "stale", marks)
                done.add(event.event_id)

    def park_many(
        self, keys: Sequence[tuple[str, str]], realm_id: str, ttl_s: int, map_: Mapper = map
    ) -> set[tuple[str, str]]:
        """Park objects (tenant id, object key) in their realm's queue in transactions of up to 100
        (``ObjectRepository.park_together``), not one conditional write each. Returns the keys parked; the others
        (gone, clean, leased, or in a transaction that failed twice) are left to their records."""
        parked: set[tuple[str, str]] = set()

        def written(key: tuple[str, str]) -> None:
            parked.add(key)
            count("SyncParked")

        _together(list(keys), lambda chunk: self.objects.park_together(chunk, realm_id, ttl_s), written, map_)
        return parked

    def _record(self, event: EventItem, outcome: str, marks: list[EventItem] | None, *, parked: bool = False) -> None:
        """The event's outcome: added to ``marks`` for the caller to write back in batch, or written now."""
        if parked:
            count("SyncParked")
        if marks is None:
            self.objects.mark_event_outcome(event, outcome)
        else:
            event.outcome = outcome
            marks.append(event)
        count("EventApplied" if outcome == "applied" else "EventStale")

    def realm_of(self, tenant_id: str) -> str:
        """The QuickBooks company a tenant's writes go to (its own id while it has none): the unit of pacing."""
        tenant = self._tenant(tenant_id)
        return tenant.realm_id if tenant is not None and tenant.realm_id else f"tenant:{tenant_id}"

    def reconcile(
        self,
        tenant_id: str,
        object_key: str,
        *,
        follow: Follow | None = None,
        claimed: Callable[[ObjectItem], None] | None = None,
    ) -> Outcome | None:
        """Bring one object's QBO documents in line with its desired state. None if another worker has it.

        ``follow``: asked for each object that waited on this one, once this one syncs. When it answers yes, this
        worker takes the waiting object's lease as it wakes it, and reconciles it next: a copay waiting on its
        visit's invoice goes out in the next ``/batch`` call instead of coming back through the stream in a later
        invocation. Otherwise (or if another worker holds it) the object is touched and the stream brings it.
        ``claimed``: told the object's row as the lease was taken (before the reconcile)."""
        item = self.objects.claim(tenant_id, object_key, only_dirty=True)
        if item is None:
            return None
        if claimed is not None:
            claimed(item)
        outcome, woken = self._reconcile_claimed(item, follow, {})
        while woken:
            count("SyncFollowed")
            taken, known = woken.pop(0)
            woken.extend(self._reconcile_claimed(taken, follow, known)[1])
        return outcome

    def _reconcile_claimed(
        self, item: ObjectItem, follow: Follow | None, known: dict[str, ObjectItem | None]
    ) -> tuple[Outcome | None, list[tuple[ObjectItem, dict[str, ObjectItem | None]]]]:
        """Reconcile an object this worker has leased. Returns the outcome and the waiting objects it took on the
        way, each with what this reconcile knows of the ledger: ``known`` for the next one, the objects it read
        (the patient) and its own row as finished, so a copay taken next does not read its visit and patient
        again."""
        version = int(item.desired_version)
        logger().thread_safe_append_keys(tenant_id=item.tenant_id, object_key=item.object_key, version=version)
        self._progress = 0
        self._local.known, self._local.read = known, {}
        try:
            outcome = self._reconcile_with_fresh_mappings(item)
        except LeaseLost:
            logger().warning("lease lost; another worker will finish the object")
            return None, []
        except QbsyncError as err:
            outcome = self._outcome_for_error(item, err)
        except QboFault as fault:
            outcome = self._outcome_for_error(item, fault.as_error())
        taken = self._finish(item, version, outcome, follow)
        read = {**self._local.read, item.object_key: item}  # the row as finish() left it (ALL_NEW)
        return outcome, [(t, {k: v for k, v in read.items() if k != t.object_key}) for t in taken]

    def _reconcile_with_fresh_mappings(self, item: ObjectItem) -> Outcome:
        """Tenants are cached for 30 s; a missing mapping is re-checked once against a fresh tenant read, so a
        retry right after an admin fixed the mapping succeeds instead of failing again."""
        try:
            return self._reconcile(item)
        except MissingMapping:
            cached = self._tenants.pop(item.tenant_id, None)
            if cached is None or time.monotonic() - cached[0] < 1.0:
                raise
            return self._reconcile(item)

    # ================================================================ reconcile per kind
    def _reconcile(self, item: ObjectItem) -> Outcome:
        tenant = self._tenant(item.tenant_id)
        if tenant is None:
            return Outcome("failed", "unknown tenant", error={"message": "tenant record missing"})
        if tenant.settings.direction == "from_qbo":
            return Outcome("skipped", "tenant syncs QuickBooks → platform only")
        if item.desired_version < 0:
            return Outcome("skipped", "known only by reference; no event yet")
        ctx = self._ctx(tenant)
        kind = item.kind
        if kind == "patient":
            if not tenant.settings.entities.customers:
                return Outcome("skipped", "customers are not synced for this tenant")
            self._ensure_customer(ctx, item.desired.get("patient_id", item.object_key.split(":", 1)[1]), item)
            return Outcome("synced")
        if kind in ("appointment", "invoice"):
            return self._reconcile_invoice(ctx, item)
        if kind in ("payment", "remittance", "credit"):
            return self.money.reconcile(ctx, item)
        return Outcome("skipped", f"{kind} sync is not enabled in this version")

    def _reconcile_invoice(self, ctx: Ctx, item: ObjectItem) -> Outcome:
        desired = item.desired
        want, why_not = wants_invoice(item.kind, item.lifecycle, desired, ctx.tenant.settings)
        txn_date = desired.get("service_date") or desired.get("invoice_date")
        if want and before_start_date(txn_date, ctx.tenant.settings):
            want, why_not = (
                False,
                f"before the accounting start date {ctx.tenant.settings.accounting_start_date}",
            )
        doc: dict[str, Any] | None = None
        if want:
            customer_id = self._customer_for(ctx, desired["patient_id"])
            ctx.forbidden = self._protected_values(ctx, desired["patient_id"])
            doc = self._invoice_doc(ctx, item, customer_id)
        synced = (item.qbo or {}).get("invoice")
        plan = plan_slot(
            slot="invoice",
            entity="Invoice",
            desired_fp=docs.fingerprint(doc) if doc else None,
            synced=synced,
            lifecycle=item.lifecycle,
            settings=ctx.tenant.settings,
        )
        owners: list[ObjectItem] = []
        if plan.action in ("void", "delete") and synced and synced.get("id"):
            # Payments applied to the invoice are unlinked first (QBO refuses to void / delete it otherwise).
            owners = self.money.unlink_invoice(ctx, item, synced)
        lookup = ("DocNumber", doc["DocNumber"] if doc else (synced or {}).get("doc_number"))
        self._execute(ctx, item, plan, doc, lookup=lookup)
        for owner in owners:
            # Only now that the invoice is closed: the payments' owners re-plan without the link.
            self.objects.touch(owner, reason=f"{item.object_key} invoice {plan.action}ed")
        if plan.action == "none" and not want and not synced:
            return Outcome("skipped", why_not)
        return Outcome("synced", plan.reason or None)

    # ================================================================ documents
    def _invoice_doc(self, ctx: Ctx, item: ObjectItem, customer_id: str) -> dict[str, Any]:
        d = item.desired
        m = ctx.tenant.mappings
        payer, modality = d.get("payer_type", "self_pay"), d.get("modality", "in_person")
        class_id = self._class_for(ctx, d.get("provider_id"))
        department_id = self._department_for(ctx, d.get("location_id"))
        date_ = d.get("service_date") or d.get("invoice_date")
        if item.kind == "appointment" and item.lifecycle == "no_show":
            fee = docs.money(d["no_show_fee"])
            lines = [
                docs.ResolvedLine(
                    item_id=self._item_for(ctx, "NO_SHOW", payer, modality),
                    qty=Decimal(1),
                    unit_price=fee,
                    service_date=date_,
                    description="No-show fee",
                )
            ]
        else:
            lines = [
                docs.ResolvedLine(
                    item_id=self._item_for(ctx, ln["service_code"], payer, modality),
                    qty=Decimal(str(ln.get("units", 1))),
                    unit_price=docs.money(ln["unit_price"]),
                    service_date=ln.get("service_date") or date_,
                    description=_line_description(ln["service_code"], m),
                    discount=docs.money(ln.get("discount_amount", 0)),
                    taxable=bool(ln.get("taxable", False)),
                    class_id=self._class_for(ctx, ln.get("provider_id")) if ln.get("provider_id") else None,
                )
                for ln in d.get("lines", [])
            ]
        if not lines:
            raise PermanentError(
                "the appointment has no service lines to invoice",
                suggested_fix="Add the services performed on the platform, then complete the appointment again.",
            )
        tax_code_id = None
        if ctx.tenant.settings.tax_policy == "tax_code":
            tax_ref = m.tax_codes.get("default")
            if not tax_ref:
                raise MissingMapping(
                    "tax policy is 'tax_code' but no default tax code is mapped",
                    suggested_fix="qbsync mappings set tax_codes default=<QBO tax code>",
                    mapping="tax_codes.default",
                )
            tax_code_id = self._ref_id(ctx, "TaxCode", tax_ref, "tax_codes.default")
        prefix = ctx.tenant.settings.doc_number_prefix
        inp = docs.SalesDocInput(
            customer_id=customer_id,
            doc_number=naming.doc_number(prefix, item.tenant_id, item.object_key, "invoice"),
            txn_date=date_,
            due_date=d.get("due_date"),
            lines=lines,
            private_note=naming.marker(item.tenant_id, item.object_key, "invoice"),
            class_id=class_id,
            department_id=department_id,
            memo=d.get("memo"),
            tax_code_id=tax_code_id,
        )
        if any(ln.discount > 0 for ln in lines) and not ctx.prefs.allow_discount:
            raise PermanentError(
                "the invoice has a discount but discounts are off in QuickBooks",
                suggested_fix="Turn on discounts in QuickBooks (Account and settings > Sales > Discount).",
            )
        return docs.build_sales_doc(inp, ctx.prefs)

    # ================================================================ references
    def _item_for(self, ctx: Ctx, code: str, payer: str, modality: str) -> str:
        m = ctx.tenant.mappings
        name = m.service_item(code, payer, modality)
        if name is None:
            raise MissingMapping(
                f"service code {code} has no QuickBooks item mapping",
                suggested_fix=f"qbsync mappings set services {code}=<QuickBooks item name>, then retry",
                mapping=f"services.{code}",
                code=code,
            )
        suffix = m.item_suffix(payer)
        row = self.refs.lookup(ctx.client, "Item", f"{name}{suffix}")
        if row is None:
            raise MissingMapping(
                f"QuickBooks item '{name}{suffix}' (for service code {code}) does not exist or is inactive",
                suggested_fix="Create or reactivate the item in QuickBooks, or map the code to another item.",
                mapping=f"services.{code}",
                code=code,
            )
        return str(row["Id"])

    def _class_for(self, ctx: Ctx, provider_id: str | None) -> str | None:
        m = ctx.tenant.mappings
        if not provider_id or not m.providers:
            return None  # the tenant does not track providers as classes
        ref = m.providers.get(provider_id)
        if ref is None:
            raise MissingMapping(
                f"provider {provider_id} has no QuickBooks class mapping",
                suggested_fix=f"qbsync mappings set providers {provider_id}=<QuickBooks class>, then retry",
                mapping=f"providers.{provider_id}",
            )
        if not (ctx.prefs.class_tracking_per_txn or ctx.prefs.class_tracking_per_line):
            raise PermanentError(
                "providers are mapped to classes but class tracking is off in QuickBooks",
                suggested_fix="Turn on class tracking in QuickBooks (Advanced settings > Categories), then retry.",
            )
        return self._ref_id(ctx, "Class", ref, f"providers.{provider_id}")

    def _department_for(self, ctx: Ctx, location_id: str | None) -> str | None:
        m = ctx.tenant.mappings
        if not location_id or not m.locations:
            return None
        ref = m.locations.get(location_id)
        if ref is None:
            raise MissingMapping(
                f"location {location_id} has no QuickBooks location (department) mapping",
                suggested_fix=f"qbsync mappings set locations {location_id}=<QuickBooks location>, then retry",
                mapping=f"locations.{location_id}",
            )
        if not ctx.prefs.track_departments:
            raise PermanentError(
                "locations are mapped but location tracking is off in QuickBooks",
                suggested_fix="Turn on location tracking in QuickBooks (Advanced settings > Categories), then retry.",
            )
        return self._ref_id(ctx, "Department", ref, f"locations.{location_id}")

    def _ref_id(self, ctx: Ctx, entity: str, ref: str, mapping: str) -> str:
        row = self.refs.lookup(ctx.client, entity, ref)
        if row is None:
            raise MissingMapping(
                f"QuickBooks {entity} '{ref}' (mapping {mapping}) does not exist or is inactive",
                suggested_fix=f"Create or reactivate the {entity} in QuickBooks, or change mapping {mapping}.",
                mapping=mapping,
            )
        return str(row["Id"])

    # ================================================================ ledger reads
    def read_object(self, ctx: Ctx, key: str) -> ObjectItem | None:
        """Another ledger object this reconcile depends on, read once per reconcile."""
        if key not in ctx.read:
            ctx.read[key] = self.objects.get(ctx.tenant.tenant_id, key)
        return ctx.read[key]

    def prefetch(self, ctx: Ctx, keys: Iterable[str]) -> None:
        """Read the objects a reconcile will need in batch reads (a remittance: every visit and patient)."""
        missing = [key for key in dict.fromkeys(keys) if key not in ctx.read]
        if len(missing) > 1:
            found = self.objects.get_many(ctx.tenant.tenant_id, missing)
            ctx.read.update({key: found.get(key) for key in missing})

    # ================================================================ customers
    def _customer_for(self, ctx: Ctx, patient_id: str) -> str:
        """The QBO customer id for a patient, creating the customer if needed (under the patient's lease)."""
        key = f"patient:{patient_id}"
        patient = self.read_object(ctx, key)
        if patient is not None and (patient.qbo or {}).get("customer", {}).get("id"):
            return str(patient.qbo["customer"]["id"])
        if not ctx.tenant.settings.entities.customers:
            raise PermanentError(
                "the patient has no linked QuickBooks customer and customer sync is off",
                suggested_fix="Link the patient to a QuickBooks customer (qbsync customers match) or enable customers.",
            )
        self.objects.ensure(ctx.tenant.tenant_id, key, "patient")
        claimed = self.objects.claim(ctx.tenant.tenant_id, key, lease_s=60)
        if claimed is None:
            raise WaitingOnDependency("the patient's customer is being created by another worker", waiting_on=key)
        ctx.read.pop(key, None)  # the customer is about to be recorded on it
        try:
            customer_id = self._ensure_customer(ctx, patient_id, claimed)
        finally:
            self._release(claimed)
        return customer_id

    def _protected_values(self, ctx: Ctx, patient_id: str) -> list[str]:
        """Values that must never appear in an outbound document for this patient (PHI guard)."""
        patient = self.read_object(ctx, f"patient:{patient_id}")
        d = (patient.desired if patient else None) or {}
        values = [d.get("email"), d.get("phone")]
        if not (ctx.tenant.settings.naming_policy == "full_name_with_consent" and d.get("name_consent")):
            values += [d.get("first_name"), d.get("last_name")]
        return [v for v in values if v]

    def _ensure_customer(self, ctx: Ctx, patient_id: str, patient: ObjectItem) -> str:
        existing = (patient.qbo or {}).get("customer")
        d = patient.desired or {}
        policy = ctx.tenant.settings.naming_policy
        base = naming.customer_display_name(
            policy,
            ctx.tenant.tenant_id,
            patient_id,
            first_name=d.get("first_name"),
            last_name=d.get("last_name"),
            consent=bool(d.get("name_consent")),
        )
        mark = naming.marker(ctx.tenant.tenant_id, patient.object_key, "customer")
        if existing and existing.get("id"):
            return str(existing["id"])
        body: dict[str, Any] = {"DisplayName": base, "Notes": mark}
        parent_id = self._billing_parent(ctx, d)
        if parent_id:
            body.update({"Job": True, "ParentRef": {"value": parent_id}, "BillWithParent": True})
        plan = SlotPlan("customer", "Customer", "create")
        forbidden = self._protected_values(ctx, patient_id)
        row = self._execute(
            ctx,
            patient,
            plan,
            body,
            lookup=("DisplayName", base),
            extra_forbidden=forbidden,
            on_duplicate_name=True,
        )
        return str(row["Id"]) if row else str((patient.qbo or {})["customer"]["id"])

    def _billing_parent(self, ctx: Ctx, d: dict[str, Any]) -> str | None:
        account_id = d.get("billing_account_id")
        if not account_id:
            return None
        name = naming.billing_account_display_name(
            ctx.tenant.tenant_id, account_id, d.get("billing_account_name"), ctx.tenant.settings.naming_policy
        )
        rows = ctx.client.query(f"select * from Customer where DisplayName = '{escape_query_value(name)}'")
        if rows:
            return str(rows[0]["Id"])
        rid = naming.request_id(ctx.tenant.tenant_id, f"account:{account_id}", "customer", "create", 0)
        created = ctx.client.create("Customer", {"DisplayName": name}, request_id=rid)
        return str(created["Id"])

    # ================================================================ the executor (exactly once)
    def _execute(
        self,
        ctx: Ctx,
        item: ObjectItem,
        plan: SlotPlan,
        doc: dict[str, Any] | None,
        *,
        lookup: Lookup,
        extra_forbidden: Iterable[str] = (),
        on_duplicate_name: bool = False,
    ) -> dict[str, Any] | None:
        """Perform ``plan`` for one slot. Returns the QBO entity written (None when nothing was written).

        ``lookup`` finds the document again after an uncertain create: ``(field, value)`` (DocNumber,
        DisplayName) or a where clause (payments: ``CustomerRef = '..' and TxnDate = '..'``); the PrivateNote
        marker then picks qbsync's own document among the rows.
        """
        slot, entity = plan.slot, plan.entity
        client = ctx.client
        version = max(int(item.desired_version), 0)
        synced = (item.qbo or {}).get(slot)
        intent = intent_for(item, slot)
        if intent and intent.get("op") == "create" and not (synced and synced.get("id")):
            # The last attempt may have committed: look before creating again.
            found = self._read_back(client, entity, intent.get("lookup") or lookup, intent.get("marker"))
            if found is not None:
                synced = self._remember(item, slot, entity, found, intent.get("fingerprint"), clear_intent=True)
                count("ReadBackRecovered", entity=entity)
            else:
                self.objects.record_intent(item, slot, None)
            plan = plan_slot(
                slot=slot,
                entity=entity,
                desired_fp=docs.fingerprint(doc) if doc else None,
                synced=synced,
                lifecycle=item.lifecycle,
                settings=ctx.tenant.settings,
            )
        if plan.action in ("none", "skip"):
            return None
        if doc is not None:
            check_payload(entity, doc, [*ctx.forbidden, *extra_forbidden])
        fp = docs.fingerprint(doc) if doc else None
        if plan.action == "create":
            assert doc is not None
            rid = naming.request_id(item.tenant_id, item.object_key, slot, "create", version)
            self.objects.record_intent(
                item,
                slot,
                {
                    "slot": slot,
                    "entity": entity,
                    "op": "create",
                    "request_id": rid,
                    "marker": doc.get("PrivateNote") or doc.get("Notes"),
                    "lookup": list(lookup) if isinstance(lookup, tuple) else lookup,
                    "fingerprint": fp,
                    "at": datetime.now(UTC).isoformat(),
                },
            )
            try:
                row = client.create(entity, doc, request_id=rid)
            except QboFault as fault:
                if on_duplicate_name and fault.code == "6240":
                    row = self._resolve_duplicate_name(ctx, item, doc, lookup)
                else:
                    raise
            self._remember(item, slot, entity, row, fp, clear_intent=True)
            count("QboCreated", entity=entity)
            return row
        assert synced is not None
        if plan.action == "update":
            assert doc is not None
            row = self._update_with_retry(client, entity, item, slot, synced, doc, version)
            self._remember(item, slot, entity, row, fp)
            count("QboUpdated", entity=entity)
            return row
        if plan.action == "void":
            rid = naming.request_id(item.tenant_id, item.object_key, slot, f"void:{synced['sync_token']}", version)
            try:
                row = client.void(entity, synced["id"], synced["sync_token"], request_id=rid)
            except QboStale:
                fresh = client.read(entity, synced["id"])
                row = client.void(entity, fresh["Id"], fresh["SyncToken"], request_id=rid + "r")
            self._remember(item, slot, entity, row, synced.get("fingerprint"), state="voided")
            count("QboVoided", entity=entity)
            return row
        if plan.action == "delete":
            rid = naming.request_id(item.tenant_id, item.object_key, slot, f"delete:{synced['sync_token']}", version)
            try:
                client.delete(entity, synced["id"], synced["sync_token"], request_id=rid)
            except QboNotFound:
                pass  # already gone (an earlier attempt committed, or deleted in QBO)
            except QboStale:
                fresh = client.read(entity, synced["id"])
                client.delete(entity, fresh["Id"], fresh["SyncToken"], request_id=rid + "r")
            self.objects.record_slot(item, slot, {**synced, "state": "deleted"})
            self._progress += 1
            count("QboDeleted", entity=entity)
            return None
        raise AssertionError(plan.action)

    def _update_with_retry(
        self,
        client: QboApi,
        entity: str,
        item: ObjectItem,
        slot: str,
        synced: dict[str, Any],
        doc: dict[str, Any],
        version: int,
    ) -> dict[str, Any]:
        token = str(synced["sync_token"])
        for _ in range(3):
            rid = naming.request_id(item.tenant_id, item.object_key, slot, f"update:{token}", version)
            body = {**doc, "Id": synced["id"], "SyncToken": token, "sparse": True}
            try:
                return client.update(entity, body, request_id=rid)
            except QboStale:
                # Someone (a QBO user, or our own earlier uncertain attempt) changed it: re-read by Id, re-apply.
                token = str(client.read(entity, synced["id"])["SyncToken"])
        raise RetryableError("the document kept changing in QuickBooks while updating", qbo_code="5010")

    def write_slots(self, ctx: Ctx, item: ObjectItem, writes: list[Callable[[ObjectItem], object]]) -> None:
        """Perform independent slot writes of one object (each ``write(item)`` plans and executes one slot), at
        once when the realm's client coalesces writes into batch calls.

        An insurer remittance has a payment per patient: written one after another, each would wait for a batch
        window of its own (QBO allows 40 batch calls a minute) and a 100-claim remittance would take minutes.
        Written at once, they share batch calls. Each writer has a private copy of ``item`` (see
        ``ObjectRepository.copies_for_writers``); every exactly-once step (intent, requestid, read-back) is the
        executor's as usual. All writes run to their end; then the first error is raised (a lost lease first:
        the whole reconcile is dropped)."""
        workers = getattr(ctx.client, "workers", None)
        if len(writes) < 2 or not isinstance(workers, Workers):
            for write in writes:
                write(item)
            return
        keys = {"tenant_id": item.tenant_id, "object_key": item.object_key, "version": int(item.desired_version)}
        fan_out = workers.fan_out(len(writes), ctx.client.realm_id)
        with self.objects.copies_for_writers(item, len(writes)) as copies, fan_out as done:

            def run(write: Callable[[ObjectItem], object], copy: ObjectItem) -> tuple[Exception | None, int]:
                logger().thread_safe_append_keys(**keys)
                self._progress = 0
                try:
                    write(copy)
                    return None, self._progress
                except Exception as exc:  # raised below, once every write has ended
                    return exc, self._progress
                finally:
                    done()

            threads = min(len(writes), MAX_SLOT_WRITERS)
            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="slots") as pool:
                results = list(pool.map(run, writes, copies))
        self._progress += sum(progress for _, progress in results)
        errors = [err for err, _ in results if err is not None]
        if errors:
            raise next((err for err in errors if isinstance(err, LeaseLost)), errors[0])

    def _read_back(
        self, client: QboApi, entity: str, lookup: Lookup | list[str], marker: str | None
    ) -> dict[str, Any] | None:
        if isinstance(lookup, str):
            where = lookup
        else:
            field_name, value = lookup
            if not value:
                return None
            where = f"{field_name} = '{escape_query_value(value)}'"
        rows = client.query(f"select * from {entity} where {where}")
        for row in rows:
            if marker is None or has_marker(str(row.get("PrivateNote", "")) + " " + str(row.get("Notes", "")), marker):
                return row
        return None

    def _resolve_duplicate_name(
        self, ctx: Ctx, item: ObjectItem, doc: dict[str, Any], lookup: Lookup
    ) -> dict[str, Any]:
        """6240 on a customer: ours (created earlier, response lost) → adopt it; someone else's → stable suffix."""
        marker = doc.get("Notes")
        found = self._read_back(ctx.client, "Customer", lookup, marker)
        if found is not None:
            return found
        d = item.desired or {}
        alt = naming.customer_display_name(
            ctx.tenant.settings.naming_policy,
            ctx.tenant.tenant_id,
            d.get("patient_id", item.object_key.split(":", 1)[1]),
            first_name=d.get("first_name"),
            last_name=d.get("last_name"),
            consent=bool(d.get("name_consent")),
            disambiguate=True,
        )
        found = self._read_back(ctx.client, "Customer", ("DisplayName", alt), marker)
        if found is not None:
            return found
        rid = naming.request_id(item.tenant_id, item.object_key, "customer", "create-alt", 0)
        return ctx.client.create("Customer", {**doc, "DisplayName": alt}, request_id=rid)

    def _remember(
        self,
        item: ObjectItem,
        slot: str,
        entity: str,
        row: dict[str, Any],
        fp: str | None,
        state: str = "active",
        *,
        clear_intent: bool = False,
    ) -> dict[str, Any]:
        info = {
            "type": entity,
            "id": str(row["Id"]),
            "sync_token": str(row.get("SyncToken", "0")),
            "doc_number": row.get("DocNumber"),
            "fingerprint": fp,
            "state": state,
            "total": row.get("TotalAmt"),
            "balance": row.get("Balance"),
            "last_updated": (row.get("MetaData") or {}).get("LastUpdatedTime"),
        }
        info = {k: v for k, v in info.items() if v is not None}
        first_time = (item.qbo or {}).get(slot, {}).get("id") != info["id"]
        self.objects.record_slot(item, slot, info, clear_intent=clear_intent)
        self._progress += 1
        tenant = self._tenant(item.tenant_id)
        if first_time and tenant is not None and tenant.realm_id:
            # QBO id → ledger object index: the change worker finds our documents without scanning.
            qbo_links.link(tenant.realm_id, entity, str(info["id"]), item.tenant_id, item.object_key, slot)
        return info

    # ================================================================ outcomes
    def _outcome_for_error(self, item: ObjectItem, err: QbsyncError) -> Outcome:
        error = err.to_dict()
        if err.kind == ErrorKind.WAITING:
            return Outcome("waiting", err.message, waiting_on=err.details.get("waiting_on"))
        if err.kind == ErrorKind.RECONNECT:
            count("SyncHeld")
            return Outcome("held", "QuickBooks connection needs reconnect", error=error)
        attempts = self._attempts_so_far(item) + 1
        if err.kind == ErrorKind.RETRYABLE and attempts < MAX_ATTEMPTS:
            count("SyncRetrying")
            return Outcome("retrying", err.message, error={**error, "attempts": attempts})
        count("SyncFailed")  # the alarm's metric (service dimension only)
        count("SyncFailedByKind", kind=failure_kind(error))
        if err.kind == ErrorKind.RETRYABLE:
            error["message"] = f"gave up after {attempts} attempts: {err.message}"
            error["suggested_fix"] = "QuickBooks kept failing; check its status, then retry from the failure list."
        return Outcome("failed", err.message, error={**error, "attempts": attempts})

    def _attempts_so_far(self, item: ObjectItem) -> int:
        """Failed attempts in a row. An attempt that stored a QBO document made progress: an object with many
        documents (a remittance) may need more attempts than MAX_ATTEMPTS when every write is uncertain."""
        return 0 if self._progress else int(item.attempts or 0)

    def _finish(
        self, item: ObjectItem, version: int, outcome: Outcome, follow: Follow | None = None
    ) -> list[ObjectItem]:
        """Record the outcome and release the lease; wake what waited on the object. Returns the waiting objects
        taken to be reconciled next (see ``reconcile``)."""
        attempts = self._attempts_so_far(item)
        next_at = None
        synced = None
        if outcome.status == "retrying":
            attempts += 1
            delay = min(get_settings().retry_base_s * 2 ** (attempts - 1), 900)
            next_at = (datetime.now(UTC) + timedelta(seconds=delay)).isoformat()
        elif outcome.status == "failed":
            attempts += 1
        elif outcome.status in ("synced", "skipped"):
            attempts = 0
            synced = {"at": datetime.now(UTC).isoformat(), "slots": sorted((item.qbo or {}).keys())}
        self.objects.finish(
            item,
            status=outcome.status,
            version=version,
            reason=outcome.reason,
            waiting_on=outcome.waiting_on,
            error=outcome.error,
            synced=synced,
            next_attempt_at=next_at,
            attempts=attempts,
        )
        logger().info(
            "object reconciled",
            extra={"status": outcome.status, "reason": outcome.reason, "attempts": attempts},
        )
        if outcome.status == "failed":
            self.dlq.send_failure(item, outcome.error or {}, version)
        if outcome.waiting_on:
            self._recheck_wait(item, outcome.waiting_on)
        if outcome.status != "synced":
            return []
        count("ObjectSynced")
        return self._wake_dependents(item, follow)

    def _wake_dependents(self, item: ObjectItem, follow: Follow | None) -> list[ObjectItem]:
        reason = f"{item.object_key} synced"
        taken: list[ObjectItem] = []
        for dependent in self.objects.waiting_on(item.tenant_id, item.object_key):
            claimed = (
                follow is not None
                and follow()
                and self.objects.claim(item.tenant_id, dependent.object_key, wake=reason)
            )
            if claimed:
                taken.append(claimed)
            else:
                self.objects.touch(dependent, reason=reason)
        return taken

    def _recheck_wait(self, item: ObjectItem, waiting_on: str) -> None:
        """Close the lost wake-up: the prerequisite may have synced (and woken its dependents) between this
        reconcile's look at it and the wait being recorded just now. If its document exists now, go again."""
        prereq = self.objects.get(item.tenant_id, waiting_on)
        if prereq is None or prereq.dirty or prereq.status != "synced":
            return
        if any(
            isinstance(slot, dict) and slot.get("id") and slot.get("state", "active") == "active"
            for slot in (prereq.qbo or {}).values()
        ):
            self.objects.touch(item, reason=f"{waiting_on} synced meanwhile")

    def _release(self, item: ObjectItem) -> None:
        """Release a lease taken for a prerequisite (patient) without changing its status."""
        self.objects.finish(item, status="synced", version=int(item.desired_version))
        self._wake_dependents(item, None)

    # ================================================================ context
    def _tenant(self, tenant_id: str) -> Tenant | None:
        hit = self._tenants.get(tenant_id)
        if hit and time.monotonic() - hit[0] < 30:
            return hit[1]
        try:
            row = TenantItem.get(f"TENANT#{tenant_id}", "TENANT")
        except TenantItem.DoesNotExist:
            return None
        tenant = tenant_from_item(row)
        self._tenants[tenant_id] = (time.monotonic(), tenant)
        return tenant

    def _connection(self, realm_id: str) -> ConnectionItem:
        """The realm's connection, if connected. A connected one is cached for ``CONNECTION_TTL_S``: every
        reconcile needs it, and a disconnect seen a few seconds late costs nothing (QBO refuses the revoked
        tokens, which holds the object just the same)."""
        hit = self._connections.get(realm_id)
        if hit and time.monotonic() - hit[0] < CONNECTION_TTL_S:
            return hit[1]
        try:
            conn = ConnectionItem.get(f"REALM#{realm_id}", "CONN")
        except ConnectionItem.DoesNotExist as exc:
            raise ReconnectNeeded("no QuickBooks connection for the realm", realm_id=realm_id) from exc
        if conn.status != "connected":
            raise ReconnectNeeded(f"QuickBooks connection is {conn.status}", realm_id=realm_id)
        self._connections[realm_id] = (time.monotonic(), conn)
        return conn

    def _ctx(self, tenant: Tenant) -> Ctx:
        if not tenant.realm_id:
            raise ReconnectNeeded("the tenant has not connected QuickBooks yet", realm_id=None)
        conn = self._connection(tenant.realm_id)
        client = self._clients.get(tenant.realm_id)
        if client is None:
            with self._clients_lock:  # one client (and so one write coalescer) per realm per container
                client = self._clients.get(tenant.realm_id) or self._client_factory(tenant.realm_id)
                self._clients[tenant.realm_id] = client
        ctx = Ctx(
            tenant=tenant,
            client=client,
            prefs=docs.CompanyPrefs.from_summary(conn.company or {}),
            read=dict(getattr(self._local, "known", {})),
        )
        self._local.read = ctx.read
        return ctx


def _line_description(code: str, m: TenantMappings) -> str:
    # The platform's free-text description may carry clinical detail; the QBO line shows the code and item.
    return f"{code} {m.services.get(code, '')}".strip()


def failure_summary(item: ObjectItem) -> dict[str, Any]:
    return {
        "tenant_id": item.tenant_id,
        "object_key": item.object_key,
        "status": item.status,
        "reason": item.status_reason,
        "error": item.last_error,
        "attempts": item.attempts,
        "qbo": json.loads(json.dumps(item.qbo or {})),
    }
