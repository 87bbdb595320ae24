"""Money movements into QBO: payments (copays, patient and insurer payments), remittances, credits, refunds.

Each money object owns several document slots (see ``shared.domain.money``). A reconcile

1. resolves the visits the money goes to (their QBO invoice, if any),
2. decides which slots should exist (a pending visit may hold the object: status ``waiting``),
3. deletes the slots that should not exist, applying payments before the credit memos they apply,
4. creates / updates the rest, credit memos before the payments that apply them,

each write through the engine's exactly-once executor. Money posted while a visit is not (or no longer)
invoiced stays unapplied on the customer; the object keeps ``waiting_on`` the visit, so the visit's next sync
wakes it to link the money.

Closing an invoice (void, delete) first unlinks the payments applied to it (``unlink_invoice``): each is updated
without the invoice's line (left unapplied), and a zero-amount payment applying a credit memo is deleted.
A deposited payment cannot be changed (QBO 6540): that is a permanent failure with the fix named.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from itertools import groupby
from typing import TYPE_CHECKING, Any

from shared.adapters.dynamo import ObjectItem
from shared.adapters.objects import slot_intents
from shared.adapters.qbo.faults import QboFault, QboNotFound, QboStale
from shared.adapters.refs import escape_query_value
from shared.domain import documents as docs
from shared.domain import money as rules
from shared.domain import naming
from shared.domain.errors import MissingMapping, PermanentError, WaitingOnDependency
from shared.domain.planner import before_start_date, plan_slot, wants_invoice
from shared.observability import count
from shared.services.outcome import Outcome

if TYPE_CHECKING:
    from shared.services.sync import Ctx, SyncService

CREDIT_CODES = {"write_off": "WRITE_OFF", "contractual": "CONTRACTUAL", "courtesy": "CREDIT"}
CREDIT_LABELS = {"write_off": "Write-off", "contractual": "Contractual adjustment", "courtesy": "Courtesy credit"}


@dataclass
class SlotSpec:
    """A document a money object should have. ``build(item)`` runs only when the slot's turn comes (an applying
    payment needs the Id of the credit memo created just before it), on the writer's own copy of the object."""

    entity: str
    build: Callable[[ObjectItem], tuple[dict[str, Any], Any]]  # -> (document, read-back lookup)
    forbidden: list[str]


class MoneySync:
    def __init__(self, engine: SyncService) -> None:
        self.e = engine

    # ================================================================ entry point
    def reconcile(self, ctx: Ctx, item: ObjectItem) -> Outcome:
        settings = ctx.tenant.settings
        if item.kind in ("payment", "remittance") and not settings.entities.payments:
            return Outcome("skipped", "payments are not synced for this tenant (entities.payments is off)")
        if item.kind == "credit" and not settings.entities.credits:
            return Outcome("skipped", "credits are not synced for this tenant (entities.credits is off)")
        d = item.desired or {}
        waiting: str | None = None
        specs: dict[str, SlotSpec] = {}
        if item.lifecycle != "deleted":
            txn_date = d.get("received_on") or d.get("issued_on")
            if before_start_date(txn_date, settings):
                return Outcome("skipped", f"dated before the accounting start date {settings.accounting_start_date}")
            if item.kind == "payment":
                specs, waiting = self._payment_specs(ctx, item)
            elif item.kind == "remittance":
                specs, waiting = self._remittance_specs(ctx, item)
            else:
                specs, waiting = self._credit_specs(ctx, item)
        self._apply_slots(ctx, item, specs)
        if waiting:
            return Outcome("synced", f"money left unapplied until {waiting} is invoiced", waiting_on=waiting)
        return Outcome("synced")

    def _apply_slots(self, ctx: Ctx, item: ObjectItem, specs: dict[str, SlotSpec]) -> None:
        """Slots of one family are independent and written at once; families go in ``SLOT_ORDER``."""
        known = {**{s: str(v.get("type")) for s, v in (item.qbo or {}).items()}}
        for s, intent in slot_intents(item).items():
            known.setdefault(s, str(intent.get("entity") or "Payment"))
        unwanted = sorted((s for s in known if s not in specs), key=rules.slot_rank)
        for _, family in groupby(unwanted, key=rules.slot_rank):
            self.e.write_slots(ctx, item, [partial(self._remove_slot, ctx, slot, known[slot]) for slot in family])
        wanted = sorted(specs, key=rules.slot_rank, reverse=True)
        for _, family in groupby(wanted, key=rules.slot_rank):
            self.e.write_slots(ctx, item, [partial(self._write_slot, ctx, slot, specs[slot]) for slot in family])

    def _remove_slot(self, ctx: Ctx, slot: str, entity: str, item: ObjectItem) -> None:
        plan = plan_slot(
            slot=slot,
            entity=entity,
            desired_fp=None,
            synced=(item.qbo or {}).get(slot),
            lifecycle="deleted",
            settings=ctx.tenant.settings,
        )
        self.e._execute(ctx, item, plan, None, lookup=("Id", None))

    def _write_slot(self, ctx: Ctx, slot: str, spec: SlotSpec, item: ObjectItem) -> None:
        doc, lookup = spec.build(item)
        plan = plan_slot(
            slot=slot,
            entity=spec.entity,
            desired_fp=docs.fingerprint(doc),
            synced=(item.qbo or {}).get(slot),
            lifecycle="active",
            settings=ctx.tenant.settings,
        )
        self.e._execute(ctx, item, plan, doc, lookup=lookup, extra_forbidden=spec.forbidden)

    # ================================================================ platform payments
    def _payment_specs(self, ctx: Ctx, item: ObjectItem) -> tuple[dict[str, SlotSpec], str | None]:
        d = item.desired
        settings = ctx.tenant.settings
        allocations = [(rules.target_key(a), a["amount"]) for a in d.get("applies_to", [])]
        targets = {key: self._target(ctx, key) for key, _ in allocations}
        copay_unapplied = d.get("kind") == "copay" and settings.unapplied_copay_policy == "unapplied"
        reverse = settings.refund_policy == "reverse_payment"
        shape = rules.shape_payment(
            d["amount"],
            allocations,
            targets,
            may_post_unapplied=copay_unapplied or d.get("kind") not in ("copay", "patient", "insurance"),
            refunded=d.get("refunded_amount", 0),
            reverse_refund=reverse,
        )
        if shape.hold:
            assert shape.waiting_on is not None
            raise WaitingOnDependency(f"waiting for {shape.waiting_on} to be invoiced", waiting_on=shape.waiting_on)
        customer_id = self.e._customer_for(ctx, d["patient_id"])
        forbidden = self.e._protected_values(ctx, d["patient_id"])
        specs: dict[str, SlotSpec] = {}
        if not shape.delete and shape.total > 0:
            specs["payment"] = SlotSpec(
                "Payment",
                partial(
                    self._payment_doc,
                    ctx,
                    "payment",
                    customer_id,
                    shape,
                    d["received_on"],
                    d.get("method"),
                    d.get("reference"),
                ),
                forbidden,
            )
        refunded = docs.money(d.get("refunded_amount", 0))
        if refunded > 0 and not reverse:
            specs["refund"] = SlotSpec(
                "RefundReceipt",
                partial(self._refund_doc, ctx, customer_id, refunded, targets),
                forbidden,
            )
        return specs, shape.waiting_on

    def _payment_doc(
        self,
        ctx: Ctx,
        slot: str,
        customer_id: str,
        shape: rules.PaymentShape,
        txn_date: str,
        method: str | None,
        reference: str | None,
        item: ObjectItem,
    ) -> tuple[dict[str, Any], str]:
        deposit = ctx.tenant.mappings.deposit_account
        doc = docs.build_payment(
            docs.PaymentInput(
                customer_id=customer_id,
                total=shape.total,
                txn_date=txn_date,
                private_note=naming.marker(item.tenant_id, item.object_key, slot),
                applied=[(ln.invoice_id, "Invoice", ln.amount) for ln in shape.links],
                method_id=self._method_for(ctx, method),
                reference=reference,
                deposit_account_id=self.e._ref_id(ctx, "Account", deposit, "deposit_account") if deposit else None,
            )
        )
        return doc, _payment_lookup(customer_id, txn_date)

    def _refund_doc(
        self, ctx: Ctx, customer_id: str, amount: Decimal, targets: dict[str, rules.Target], item: ObjectItem
    ) -> tuple[dict[str, Any], tuple[str, str]]:
        d = item.desired
        item_id = self._credit_item(ctx, "REFUND", list(targets))
        m = ctx.tenant.mappings
        account_id = (
            self.e._ref_id(ctx, "Account", m.deposit_account, "deposit_account")
            if m.deposit_account
            else self._undeposited_funds(ctx)
        )
        extra: dict[str, Any] = {"DepositToAccountRef": {"value": account_id}}
        method_id = self._method_for(ctx, d.get("method"))
        if method_id:
            extra["PaymentMethodRef"] = {"value": method_id}
        if d.get("reference"):
            extra["PaymentRefNum"] = str(d["reference"])[:21]
        doc_number = naming.doc_number(ctx.tenant.settings.doc_number_prefix, item.tenant_id, item.object_key, "refund")
        doc = docs.build_sales_doc(
            docs.SalesDocInput(
                customer_id=customer_id,
                doc_number=doc_number,
                txn_date=d["received_on"],
                lines=[docs.ResolvedLine(item_id, Decimal(1), amount, d["received_on"], "Refund")],
                private_note=naming.marker(item.tenant_id, item.object_key, "refund"),
                extra=extra,
            ),
            ctx.prefs,
        )
        return doc, ("DocNumber", doc_number)

    # ================================================================ insurer remittances
    def _remittance_specs(self, ctx: Ctx, item: ObjectItem) -> tuple[dict[str, SlotSpec], str | None]:
        d = item.desired
        plan = rules.plan_remittance(d.get("items", []))
        keys = {k for allocs in plan.payments.values() for k, _ in allocs}
        # Up to 100 claims: their visits and patients in a few batch reads, not one read each.
        self.e.prefetch(ctx, [*sorted(keys), *(f"patient:{pid}" for pid in plan.patients())])
        targets = {key: self._target(ctx, key) for key in sorted(keys)}
        pending = next((k for k, t in targets.items() if t.state == "pending"), None)
        if pending:
            # An insurer's money is posted linked to its visits: hold until every visit is invoiced.
            raise WaitingOnDependency(f"waiting for {pending} to be invoiced", waiting_on=pending)
        waiting = next((k for k, t in targets.items() if t.state != "ready"), None)
        customers = {pid: self.e._customer_for(ctx, pid) for pid in plan.patients()}
        forbidden = sorted({v for pid in customers for v in self.e._protected_values(ctx, pid)})
        specs: dict[str, SlotSpec] = {}
        for pid, allocs in plan.payments.items():
            total = sum((docs.money(a) for _, a in allocs), Decimal(0))
            if total <= 0:
                continue
            shape = rules.shape_payment(total, allocs, targets, may_post_unapplied=True)
            slot = f"payment:{pid}"
            specs[slot] = SlotSpec(
                "Payment",
                partial(
                    self._payment_doc,
                    ctx,
                    slot,
                    customers[pid],
                    shape,
                    d["received_on"],
                    d.get("method"),
                    d.get("reference"),
                ),
                forbidden,
            )
        if ctx.tenant.settings.entities.credits:
            for adj in plan.adjustments:
                target = targets[adj.target]
                if target.state != "ready":
                    continue  # a closed visit gets no adjustment (its invoice is void or gone)
                specs[adj.credit_slot] = SlotSpec(
                    "CreditMemo",
                    partial(
                        self.credit_doc,
                        ctx,
                        adj.credit_slot,
                        customers[adj.patient_id],
                        adj.kind,
                        adj.amount,
                        adj.target,
                        d["received_on"],
                    ),
                    forbidden,
                )
                specs[adj.apply_slot] = SlotSpec(
                    "Payment",
                    partial(
                        self.apply_doc,
                        ctx,
                        adj.apply_slot,
                        adj.credit_slot,
                        customers[adj.patient_id],
                        target,
                        adj.amount,
                        d["received_on"],
                    ),
                    forbidden,
                )
        return specs, waiting

    # ================================================================ platform credits
    def _credit_specs(self, ctx: Ctx, item: ObjectItem) -> tuple[dict[str, SlotSpec], str | None]:
        d = item.desired
        customer_id = self.e._customer_for(ctx, d["patient_id"])
        forbidden = self.e._protected_values(ctx, d["patient_id"])
        amount = docs.money(d["amount"])
        alloc = d.get("applies_to")
        key = rules.target_key(alloc) if alloc else None
        target = self._target(ctx, key) if key else None
        specs = {
            "creditmemo": SlotSpec(
                "CreditMemo",
                partial(
                    self.credit_doc,
                    ctx,
                    "creditmemo",
                    customer_id,
                    d.get("kind", "courtesy"),
                    amount,
                    key,
                    d["issued_on"],
                ),
                forbidden,
            )
        }
        waiting = None
        if target is not None and alloc is not None:
            applied = min(amount, docs.money(alloc["amount"]))
            if target.state == "ready" and applied > 0:
                specs["apply"] = SlotSpec(
                    "Payment",
                    partial(self.apply_doc, ctx, "apply", "creditmemo", customer_id, target, applied, d["issued_on"]),
                    forbidden,
                )
            elif target.state != "ready":
                waiting = target.key
        return specs, waiting

    # ================================================================ documents
    def credit_doc(
        self,
        ctx: Ctx,
        slot: str,
        customer_id: str,
        kind: str,
        amount: Decimal,
        target: str | None,
        txn_date: str,
        item: ObjectItem,
    ) -> tuple[dict[str, Any], tuple[str, str]]:
        code = CREDIT_CODES.get(kind, "CREDIT")
        item_id = self._credit_item(ctx, code, [target] if target else [])
        prefix = rules.credit_prefix(kind, ctx.tenant.settings)
        number = rules.credit_doc_number(prefix, naming.short_hash(item.tenant_id, item.object_key, slot, length=10))
        doc = docs.build_sales_doc(
            docs.SalesDocInput(
                customer_id=customer_id,
                doc_number=number,
                txn_date=txn_date,
                lines=[docs.ResolvedLine(item_id, Decimal(1), amount, txn_date, CREDIT_LABELS.get(kind, "Credit"))],
                private_note=naming.marker(item.tenant_id, item.object_key, slot),
            ),
            ctx.prefs,
        )
        return doc, ("DocNumber", number)

    def apply_doc(
        self,
        ctx: Ctx,
        slot: str,
        credit_slot: str,
        customer_id: str,
        target: rules.Target,
        amount: Decimal,
        txn_date: str,
        item: ObjectItem,
    ) -> tuple[dict[str, Any], str]:
        credit = (item.qbo or {}).get(credit_slot) or {}
        if not credit.get("id"):
            raise PermanentError(f"credit memo of {credit_slot} was not created", suggested_fix="Retry the object.")
        assert target.invoice_id is not None
        doc = docs.build_payment(
            docs.PaymentInput(
                customer_id=customer_id,
                total=Decimal(0),
                txn_date=txn_date,
                private_note=naming.marker(item.tenant_id, item.object_key, slot),
                applied=[(target.invoice_id, "Invoice", amount), (str(credit["id"]), "CreditMemo", amount)],
            )
        )
        return doc, _payment_lookup(customer_id, txn_date)

    # ================================================================ references
    def _target(self, ctx: Ctx, key: str) -> rules.Target:
        obj = self.e.read_object(ctx, key)
        if obj is None or int(obj.desired_version) < 0:
            return rules.Target(key, "pending")
        inv = (obj.qbo or {}).get("invoice")
        want, _ = wants_invoice(obj.kind, obj.lifecycle, obj.desired or {}, ctx.tenant.settings)
        state = rules.target_state(obj.lifecycle, inv, want)
        return rules.Target(key, state, str(inv["id"]) if state == "ready" and inv else None)

    def _credit_item(self, ctx: Ctx, code: str, target_keys: list[str]) -> str:
        """The item of a credit / refund line: the code's own mapping, else the visit's first service item."""
        m = ctx.tenant.mappings
        if code in m.services:
            return self.e._item_for(ctx, code, "*", "*")
        for key in target_keys:
            obj = self.e.read_object(ctx, key)
            d = (obj.desired if obj else None) or {}
            if d.get("lines"):
                return self.e._item_for(
                    ctx, d["lines"][0]["service_code"], d.get("payer_type", "self_pay"), d.get("modality", "in_person")
                )
        raise MissingMapping(
            f"no QuickBooks item for {code.lower().replace('_', '-')} lines",
            suggested_fix=f"qbsync mappings set services {code}=<QuickBooks item name>, then retry",
            mapping=f"services.{code}",
        )

    def _method_for(self, ctx: Ctx, method: str | None) -> str | None:
        m = ctx.tenant.mappings
        if not method or not m.payment_methods:
            return None  # the tenant does not map payment methods
        ref = m.payment_methods.get(method)
        if ref is None:
            raise MissingMapping(
                f"payment method {method} has no QuickBooks payment method mapping",
                suggested_fix=f"qbsync mappings set payment_methods {method}=<QuickBooks payment method>, then retry",
                mapping=f"payment_methods.{method}",
            )
        return self.e._ref_id(ctx, "PaymentMethod", ref, f"payment_methods.{method}")

    def _undeposited_funds(self, ctx: Ctx) -> str:
        for row in self.e.refs.rows(ctx.client, "Account"):
            if row.get("AccountSubType") == "UndepositedFunds" and row.get("Active", True):
                return str(row["Id"])
        raise MissingMapping(
            "refunds need the account the money leaves, and no Undeposited Funds account was found",
            suggested_fix="qbsync mappings set deposit_account=<QuickBooks bank account>, then retry",
            mapping="deposit_account",
        )

    # ================================================================ closing an invoice
    def unlink_invoice(self, ctx: Ctx, item: ObjectItem, synced: dict[str, Any]) -> list[ObjectItem]:
        """Unlink every payment applied to the invoice before it is voided or deleted.

        A payment keeps its money, unapplied; a zero-amount payment applying a credit memo is deleted (the
        credit stays on the customer until its owner re-plans). Returns the ledger objects owning those
        payments, to wake once the invoice is closed. Raises PermanentError for a deposited payment (6540).
        """
        client = ctx.client
        invoice_id = str(synced["id"])
        try:
            invoice = client.read("Invoice", invoice_id)
        except QboNotFound:
            return []
        payment_ids = [str(x["TxnId"]) for x in invoice.get("LinkedTxn", []) if x.get("TxnType") == "Payment"]
        owners: list[ObjectItem] = []
        version = max(int(item.desired_version), 0)
        for pid in payment_ids:
            try:
                pay = client.read("Payment", pid)
            except QboNotFound:
                continue
            keep = [
                ln
                for ln in pay.get("Line", [])
                if not any(t.get("TxnType") == "Invoice" and str(t.get("TxnId")) == invoice_id for t in ln["LinkedTxn"])
            ]
            rid = naming.request_id(item.tenant_id, item.object_key, f"unlink:{pid}", pay["SyncToken"], version)
            try:
                if docs.money(pay.get("TotalAmt", 0)) == 0:
                    client.delete("Payment", pid, pay["SyncToken"], request_id=rid)
                else:
                    lines = [{"Amount": ln["Amount"], "LinkedTxn": ln["LinkedTxn"]} for ln in keep]
                    body = {"Id": pid, "SyncToken": pay["SyncToken"], "sparse": True, "Line": lines}
                    client.update("Payment", body, request_id=rid)
            except QboStale:
                continue  # changed meanwhile: the invoice write fails and the retry unlinks again
            except QboFault as fault:
                if fault.code == "6540":
                    raise PermanentError(
                        f"{item.object_key}: the invoice cannot be closed because payment {pid} applied to it is in "
                        "a bank deposit",
                        suggested_fix=f"In QuickBooks remove payment {pid} from its deposit (or record a refund "
                        "instead), then retry.",
                        qbo_code="6540",
                    ) from fault
                raise
            count("QboPaymentUnlinked")
            owner = self._owner_of(ctx, str(pay.get("PrivateNote", "")), pid)
            if owner is not None:
                owners.append(owner)
        if payment_ids:
            fresh = client.read("Invoice", invoice_id)
            self.e.objects.record_slot(item, "invoice", {**synced, "sync_token": str(fresh["SyncToken"])})
        return owners

    def _owner_of(self, ctx: Ctx, note: str, payment_id: str) -> ObjectItem | None:
        for key, slot in rules.parse_marker_candidates(note):
            obj = self.e.objects.get(ctx.tenant.tenant_id, key)
            if obj is not None and str(((obj.qbo or {}).get(slot) or {}).get("id")) == payment_id:
                return obj
        return None


def _payment_lookup(customer_id: str, txn_date: str) -> str:
    # Payments have no DocNumber: same customer and date, then the PrivateNote marker picks ours.
    return f"CustomerRef = '{escape_query_value(customer_id)}' and TxnDate = '{escape_query_value(txn_date)}'"
