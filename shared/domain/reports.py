"""Revenue, visit and deposit reconciliation from the ledger, and its comparison with the QBO company. Pure.

The ledger knows, per source object, the platform's PHI-free data (``desired``) and the QBO documents qbsync
wrote for it (``qbo[slot]``). From those rows alone this module rebuilds what QuickBooks should show:

* each **visit** (an appointment or platform invoice whose QBO invoice is active) with its charges, and the
  money applied to it: copays, patient payments, insurer payments, contractual adjustments, write-offs and
  credits — computed with the same allocation rules the sync engine uses (``shared.domain.money``), and only
  for money whose QBO document exists;
* the **revenue report** (invoiced, collected, adjusted, written off, outstanding) by provider, location,
  service code, category (the QBO item), payer type and modality, for visits dated in the period;
* the **visit reconciliation** (every visit's money, and the ones that do not add up, with the reason);
* the **deposit reconciliation** (platform deposit batches vs the QBO payments in them);
* and, given the QBO documents read back, every **difference** (document, field, ledger value, QBO value)
  and the **drift** between the two sides with a suggested action.

Amounts are ``Decimal`` to the cent throughout; JSON output carries them as strings.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from shared.domain import money as rules
from shared.domain.documents import money
from shared.domain.tenant import TenantMappings, TenantSettings

ZERO = Decimal("0.00")
DIMENSIONS = ("provider", "location", "payer_type", "modality")
LINE_DIMENSIONS = ("service", "category")
MONEY_FIELDS = ("copay", "patient_paid", "insurer_paid", "adjustments", "write_offs", "credits")
NONE = "(none)"


# ================================================================== inputs
@dataclass(frozen=True)
class LedgerRow:
    """One source object as the ledger holds it (the adapter's ``ObjectItem`` without the machinery)."""

    object_key: str
    kind: str
    lifecycle: str = "active"
    status: str = "synced"
    desired: Mapping[str, Any] = field(default_factory=dict)
    qbo: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    status_reason: str | None = None


@dataclass(frozen=True)
class Period:
    """Inclusive date range."""

    start: date
    end: date

    def contains(self, day: str | None) -> bool:
        if not day:
            return False
        return self.start <= date.fromisoformat(day[:10]) <= self.end

    def to_json(self) -> dict[str, str]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat()}


def active(slot: Mapping[str, Any] | None) -> bool:
    """The slot's QBO document exists and is neither voided nor deleted (as far as the ledger knows)."""
    return bool(slot and slot.get("id") and slot.get("state", "active") == "active")


def service_item_name(m: TenantMappings, code: str, payer: str, modality: str) -> str | None:
    """The QBO item a service line goes to (the sync engine's rule: most specific mapping key, payer suffix)."""
    name = m.service_item(code, payer, modality)
    return None if name is None else name + m.item_suffix(payer)


# ================================================================== visits
@dataclass(frozen=True)
class VisitLine:
    service_code: str
    category: str  # the QBO item name (or the code when unmapped)
    provider: str
    gross: Decimal  # units x unit price (the QBO line amount)
    discount: Decimal

    @property
    def net(self) -> Decimal:
        return self.gross - self.discount


@dataclass
class Visit:
    key: str  # appointment:{id} | invoice:{id}
    service_date: str
    provider: str
    location: str
    payer_type: str
    modality: str
    lines: list[VisitLine]
    invoice: Mapping[str, Any]  # the ledger's invoice slot (id, doc_number, total, ...)
    copay: Decimal = ZERO
    patient_paid: Decimal = ZERO
    insurer_paid: Decimal = ZERO
    adjustments: Decimal = ZERO  # contractual
    write_offs: Decimal = ZERO
    credits: Decimal = ZERO  # courtesy credits
    qbo_balance: Decimal | None = None  # set by ``verify`` from the QBO invoice

    @property
    def charges(self) -> Decimal:
        return sum((ln.net for ln in self.lines), ZERO)

    @property
    def collected(self) -> Decimal:
        return self.copay + self.patient_paid + self.insurer_paid

    @property
    def written_off(self) -> Decimal:
        return self.write_offs + self.credits

    @property
    def balance(self) -> Decimal:
        """What the invoice's balance must be: charges less every amount applied to it."""
        return self.charges - self.collected - self.adjustments - self.written_off

    def dims(self) -> dict[str, str]:
        return {
            "provider": self.provider,
            "location": self.location,
            "payer_type": self.payer_type,
            "modality": self.modality,
        }

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "visit": self.key,
            "service_date": self.service_date,
            **self.dims(),
            "invoice_id": self.invoice.get("id"),
            "doc_number": self.invoice.get("doc_number"),
            "charges": str(self.charges),
            **{f: str(getattr(self, f)) for f in MONEY_FIELDS},
            "balance": str(self.balance),
        }
        if self.qbo_balance is not None:
            out["qbo_balance"] = str(self.qbo_balance)
        return out


def _visit(row: LedgerRow, m: TenantMappings) -> Visit | None:
    """The visit of an appointment / invoice row whose QBO invoice is active (None otherwise)."""
    inv = row.qbo.get("invoice")
    if row.kind not in ("appointment", "invoice") or not active(inv):
        return None
    assert inv is not None
    d = row.desired
    payer, modality = str(d.get("payer_type", "self_pay")), str(d.get("modality", "in_person"))
    provider = str(d.get("provider_id") or NONE)
    lines: list[VisitLine] = []
    if row.lifecycle == "no_show" and d.get("no_show_fee") is not None:
        fee = money(d["no_show_fee"])
        lines.append(
            VisitLine("NO_SHOW", service_item_name(m, "NO_SHOW", payer, modality) or "NO_SHOW", provider, fee, ZERO)
        )
    else:
        for ln in d.get("lines", []):
            code = str(ln["service_code"])
            gross = money(Decimal(str(ln.get("units", 1))) * money(ln["unit_price"]))
            lines.append(
                VisitLine(
                    code,
                    service_item_name(m, code, payer, modality) or code,
                    str(ln.get("provider_id") or provider),
                    gross,
                    money(ln.get("discount_amount", 0)),
                )
            )
    return Visit(
        key=row.object_key,
        service_date=str(d.get("service_date") or d.get("invoice_date") or ""),
        provider=provider,
        location=str(d.get("location_id") or NONE),
        payer_type=payer,
        modality=modality,
        lines=lines,
        invoice=inv,
    )


# ================================================================== money applied to visits
@dataclass(frozen=True)
class Issue:
    """Something that does not add up, for a person to look at."""

    subject: str  # a visit key, a money object key or a QBO document
    reason: str
    amount: Decimal | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "reason": self.reason,
            "amount": None if self.amount is None else str(self.amount),
        }


@dataclass
class Ledger:
    """Every visit and money movement of a tenant as the ledger says QBO holds them."""

    visits: dict[str, Visit]
    rows: dict[str, LedgerRow]
    unapplied: Decimal = ZERO  # money in QBO not applied to any invoice (on the customer)
    refunded: Decimal = ZERO
    reverse_refunds: bool = False  # refund policy reverse_payment: a refund reduces the payment itself
    issues: list[Issue] = field(default_factory=list)


def build_ledger(rows: Iterable[LedgerRow], mappings: TenantMappings, settings: TenantSettings) -> Ledger:
    """Rebuild visits and the money applied to them from ledger rows (all of a tenant's, any date)."""
    by_key = {r.object_key: r for r in rows}
    reverse = settings.refund_policy == "reverse_payment"
    led = Ledger(visits={}, rows=by_key, reverse_refunds=reverse)
    for r in by_key.values():
        v = _visit(r, mappings)
        if v is not None:
            led.visits[r.object_key] = v
        elif r.kind in ("appointment", "invoice") and r.status in ("failed", "waiting", "retrying", "held", "manual"):
            led.issues.append(Issue(r.object_key, f"visit not in QuickBooks: {r.status} ({r.status_reason or '-'})"))
    for r in sorted(by_key.values(), key=lambda x: x.object_key):
        if r.lifecycle == "deleted" or r.kind not in ("payment", "remittance", "credit"):
            continue
        if r.status not in ("synced", "skipped", "excluded", "manual_done") and not any(
            active(s) for s in r.qbo.values()
        ):
            led.issues.append(Issue(r.object_key, f"money not in QuickBooks: {r.status} ({r.status_reason or '-'})"))
        if r.kind == "payment":
            _apply_payment(led, r, reverse)
        elif r.kind == "remittance":
            _apply_remittance(led, r)
        else:
            _apply_credit(led, r)
    return led


def _targets(led: Ledger, keys: Iterable[str]) -> dict[str, rules.Target]:
    out = {}
    for k in keys:
        v = led.visits.get(k)
        out[k] = rules.Target(k, "ready", str(v.invoice["id"])) if v else rules.Target(k, "closed")
    return out


def _no_visit(led: Ledger, owner: str, target: str, amount: Decimal) -> None:
    row = led.rows.get(target)
    if row is None or not row.desired:
        led.issues.append(Issue(owner, f"money without a visit: {target} is not known to the ledger", amount))
    elif row.lifecycle in ("cancelled", "voided", "deleted"):
        led.issues.append(Issue(owner, f"money for {target}, which is {row.lifecycle}: left unapplied", amount))
    else:
        led.issues.append(Issue(owner, f"money for {target}, which has no QuickBooks invoice: left unapplied", amount))


def _credit_visit(led: Ledger, target: str, attr: str, amount: Decimal) -> None:
    v = led.visits[target]
    setattr(v, attr, getattr(v, attr) + amount)


def _apply_payment(led: Ledger, r: LedgerRow, reverse: bool) -> None:
    d = r.desired
    if not active(r.qbo.get("payment")):
        return
    allocs = [(rules.target_key(a), a["amount"]) for a in d.get("applies_to", [])]
    shape = rules.shape_payment(
        d["amount"],
        allocs,
        _targets(led, [k for k, _ in allocs]),
        may_post_unapplied=True,
        refunded=d.get("refunded_amount", 0),
        reverse_refund=reverse,
    )
    attr = {"copay": "copay", "insurance": "insurer_paid"}.get(str(d.get("kind", "patient")), "patient_paid")
    for ln in shape.links:
        _credit_visit(led, ln.target, attr, ln.amount)
    for key, amount in allocs:
        if key not in led.visits and money(amount) > 0:
            _no_visit(led, r.object_key, key, money(amount))
    led.unapplied += shape.unapplied
    if active(r.qbo.get("refund")):
        led.refunded += money(d.get("refunded_amount", 0))


def _apply_remittance(led: Ledger, r: LedgerRow) -> None:
    plan = rules.plan_remittance(list(r.desired.get("items", [])))
    for pid, allocs in plan.payments.items():
        if not active(r.qbo.get(f"payment:{pid}")):
            continue
        total = sum((money(a) for _, a in allocs), ZERO)
        shape = rules.shape_payment(total, allocs, _targets(led, [k for k, _ in allocs]), may_post_unapplied=True)
        for ln in shape.links:
            _credit_visit(led, ln.target, "insurer_paid", ln.amount)
        for key, amount in allocs:
            if key not in led.visits and money(amount) > 0:
                _no_visit(led, r.object_key, key, money(amount))
        led.unapplied += shape.unapplied
    for adj in plan.adjustments:
        if adj.target in led.visits and active(r.qbo.get(adj.credit_slot)) and active(r.qbo.get(adj.apply_slot)):
            _credit_visit(led, adj.target, "write_offs" if adj.kind == "write_off" else "adjustments", adj.amount)


def _apply_credit(led: Ledger, r: LedgerRow) -> None:
    d = r.desired
    if not active(r.qbo.get("creditmemo")):
        return
    amount = money(d["amount"])
    alloc = d.get("applies_to")
    applied = ZERO
    if alloc:
        key = rules.target_key(alloc)
        if key in led.visits and active(r.qbo.get("apply")):
            applied = min(amount, money(alloc["amount"]))
            _credit_visit(led, key, "write_offs" if d.get("kind") == "write_off" else "credits", applied)
        elif key not in led.visits:
            _no_visit(led, r.object_key, key, min(amount, money(alloc["amount"])))
    led.unapplied += amount - applied


# ================================================================== revenue report
@dataclass
class Figures:
    visits: int = 0
    invoiced: Decimal = ZERO
    collected: Decimal = ZERO
    adjusted: Decimal = ZERO
    written_off: Decimal = ZERO
    outstanding: Decimal = ZERO

    def add_visit(self, v: Visit) -> None:
        self.visits += 1
        self.invoiced += v.charges
        self.collected += v.collected
        self.adjusted += v.adjustments
        self.written_off += v.written_off
        self.outstanding += v.balance

    def to_json(self) -> dict[str, Any]:
        return {
            "visits": self.visits,
            "invoiced": str(self.invoiced),
            "collected": str(self.collected),
            "adjusted": str(self.adjusted),
            "written_off": str(self.written_off),
            "outstanding": str(self.outstanding),
        }


@dataclass
class RevenueReport:
    period: Period
    totals: Figures
    by: dict[str, dict[str, Figures]]  # provider / location / payer_type / modality -> key -> figures
    by_line: dict[str, dict[str, Decimal]]  # service / category -> key -> net invoiced
    unapplied: Decimal
    refunded: Decimal
    not_invoiced: list[Issue]
    verify: Verification | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "report": "revenue",
            "period": self.period.to_json(),
            "totals": {**self.totals.to_json(), "unapplied": str(self.unapplied), "refunded": str(self.refunded)},
            "by": {
                **{dim: {k: f.to_json() for k, f in sorted(rows.items())} for dim, rows in self.by.items()},
                **{
                    dim: {k: {"invoiced": str(a)} for k, a in sorted(rows.items())}
                    for dim, rows in self.by_line.items()
                },
            },
            "not_invoiced": [i.to_json() for i in self.not_invoiced],
        }
        if self.verify is not None:
            out["verify"] = self.verify.to_json()
        return out


def revenue_report(led: Ledger, period: Period) -> RevenueReport:
    """Invoiced, collected, adjusted, written off and outstanding for the visits dated in ``period``."""
    totals = Figures()
    by: dict[str, dict[str, Figures]] = {dim: defaultdict(Figures) for dim in DIMENSIONS}
    by_line: dict[str, dict[str, Decimal]] = {dim: defaultdict(Decimal) for dim in LINE_DIMENSIONS}
    for v in period_visits(led, period):
        totals.add_visit(v)
        for dim, key in v.dims().items():
            by[dim][key].add_visit(v)
        for ln in v.lines:
            by_line["service"][ln.service_code] += ln.net
            by_line["category"][ln.category] += ln.net
    not_invoiced = [
        i
        for i in led.issues
        if i.subject in led.rows
        and period.contains(_row_date(led.rows[i.subject]))
        and i.subject.split(":")[0] in ("appointment", "invoice")
    ]
    return RevenueReport(
        period=period,
        totals=totals,
        by={k: dict(v) for k, v in by.items()},
        by_line={k: dict(v) for k, v in by_line.items()},
        unapplied=led.unapplied,
        refunded=led.refunded,
        not_invoiced=not_invoiced,
    )


def period_visits(led: Ledger, period: Period) -> list[Visit]:
    return sorted((v for v in led.visits.values() if period.contains(v.service_date)), key=lambda v: v.key)


def _row_date(r: LedgerRow) -> str | None:
    d = r.desired
    for k in ("service_date", "invoice_date", "received_on", "issued_on"):
        if d.get(k):
            return str(d[k])
    return None


# ================================================================== visit reconciliation
def visit_issues(v: Visit) -> list[Issue]:
    """Why a visit's money does not add up (empty when it does)."""
    out: list[Issue] = []
    if v.balance < 0:
        out.append(Issue(v.key, "negative balance: more money applied than charged", v.balance))
    if v.qbo_balance is not None and v.qbo_balance != v.balance:
        out.append(
            Issue(
                v.key,
                f"charges {v.charges} != copay + payments + reimbursement + adjustments + write-offs + "
                f"QuickBooks balance {v.qbo_balance} (the ledger's money leaves {v.balance})",
                v.qbo_balance - v.balance,
            )
        )
    return out


def visit_reconciliation(led: Ledger, period: Period) -> dict[str, Any]:
    visits = period_visits(led, period)
    issues = [i for v in visits for i in visit_issues(v)]
    money_issues = [
        i
        for i in led.issues
        if not i.subject.startswith(("appointment:", "invoice:")) and _money_in_period(led, i, period)
    ]
    sums = {f: str(sum((getattr(v, f) for v in visits), ZERO)) for f in ("charges", *MONEY_FIELDS, "balance")}
    return {
        "report": "visits",
        "period": period.to_json(),
        "totals": {"visits": len(visits), **sums},
        "visits": [v.to_json() for v in visits],
        "issues": [i.to_json() for i in issues + money_issues],
    }


def _money_in_period(led: Ledger, issue: Issue, period: Period) -> bool:
    row = led.rows.get(issue.subject)
    if row is None:
        return True
    targets = [rules.target_key(a) for a in row.desired.get("applies_to", []) or []]
    if isinstance(row.desired.get("applies_to"), dict):
        targets = [rules.target_key(row.desired["applies_to"])]
    targets += [rules.target_key(it) for it in row.desired.get("items", [])]
    dates = [_row_date(led.rows[t]) for t in targets if t in led.rows] or [_row_date(row)]
    return any(period.contains(d) for d in dates)


# ================================================================== deposit reconciliation
@dataclass(frozen=True)
class QboPayment:
    id: str
    total: Decimal
    txn_date: str
    deposit_account: str | None  # DepositToAccountRef (None: Undeposited Funds by default)
    voided: bool = False


def deposit_reconciliation(
    led: Ledger,
    period: Period,
    qbo_payments: Mapping[str, QboPayment] | None = None,
    undeposited_account: str | None = None,
) -> dict[str, Any]:
    """Platform deposit batches vs the QBO payments in them, for money received in ``period``.

    Without ``qbo_payments`` the QBO side is what the ledger recorded when each payment was written.
    An insurer remittance is its own batch (``era:{id}``): one QBO payment per patient.
    """
    batches: dict[str, dict[str, Any]] = {}
    no_batch: list[dict[str, Any]] = []
    issues: list[Issue] = []
    seen: set[str] = set()

    def qbo_total(slot: Mapping[str, Any] | None) -> tuple[Decimal | None, str | None, bool]:
        if not active(slot):
            return None, None, False
        assert slot is not None
        qid = str(slot["id"])
        seen.add(qid)
        if qbo_payments is None:
            return money(slot.get("total", 0)), qid, True
        p = qbo_payments.get(qid)
        if p is None or p.voided:
            return None, qid, False
        undeposited = p.deposit_account is None or p.deposit_account == undeposited_account
        return p.total, qid, undeposited

    for r in sorted(led.rows.values(), key=lambda x: x.object_key):
        d = r.desired
        if r.lifecycle == "deleted" or not period.contains(d.get("received_on")):
            continue
        if r.kind == "payment":
            refunded = money(d.get("refunded_amount", 0)) if led.reverse_refunds else ZERO
            expected = money(d["amount"]) - refunded
            slots = [("payment", r.qbo.get("payment"), expected)]
            batch_id = d.get("deposit_batch_id")
        elif r.kind == "remittance":
            plan = rules.plan_remittance(list(d.get("items", [])))
            slots = [
                (f"payment:{pid}", r.qbo.get(f"payment:{pid}"), sum((money(a) for _, a in allocs), ZERO))
                for pid, allocs in plan.payments.items()
            ]
            batch_id = f"era:{d.get('remittance_id', r.object_key.split(':', 1)[1])}"
        else:
            continue
        for slot_name, slot, expected in slots:
            total, qid, undeposited = qbo_total(slot)
            entry = {"object": r.object_key, "slot": slot_name, "qbo_id": qid, "platform": str(expected)}
            entry["qbo"] = None if total is None else str(total)
            if not batch_id:
                no_batch.append(entry)
                continue
            b = batches.setdefault(
                str(batch_id), {"batch": str(batch_id), "platform_total": ZERO, "qbo_total": ZERO, "payments": []}
            )
            b["platform_total"] += expected
            b["payments"].append(entry)
            if total is None:
                issues.append(Issue(str(batch_id), f"{r.object_key} ({slot_name}) is missing in QuickBooks", expected))
                continue
            b["qbo_total"] += total
            if total != expected:
                issues.append(
                    Issue(str(batch_id), f"{r.object_key}: QuickBooks payment {qid} is {total}, platform {expected}")
                )
            if not undeposited:
                issues.append(Issue(str(batch_id), f"{r.object_key}: payment {qid} is no longer in Undeposited Funds"))
    for b in batches.values():
        b["difference"] = str(b["qbo_total"] - b["platform_total"])
        if b["qbo_total"] != b["platform_total"]:
            issues.append(
                Issue(
                    b["batch"],
                    f"batch total {b['platform_total']} != QuickBooks payments {b['qbo_total']}",
                    b["qbo_total"] - b["platform_total"],
                )
            )
        b["platform_total"], b["qbo_total"] = str(b["platform_total"]), str(b["qbo_total"])
    for e in no_batch:
        issues.append(Issue(e["object"], "payment with no deposit batch", money(e["platform"])))
    qbo_only: list[dict[str, Any]] = []
    if qbo_payments is not None:
        for p in sorted(qbo_payments.values(), key=lambda p: p.id):
            if p.id in seen or p.voided or p.total == 0 or not period.contains(p.txn_date):
                continue
            if p.deposit_account is None or p.deposit_account == undeposited_account:
                qbo_only.append({"qbo_id": p.id, "total": str(p.total), "txn_date": p.txn_date})
                issues.append(Issue(f"Payment {p.id}", "in Undeposited Funds but in no platform batch", p.total))
    return {
        "report": "deposits",
        "period": period.to_json(),
        "batches": [batches[k] for k in sorted(batches)],
        "no_batch": no_batch,
        "qbo_only": qbo_only,
        "issues": [i.to_json() for i in issues],
    }


# ================================================================== verify: the QBO side
@dataclass(frozen=True)
class Difference:
    document: str  # "Invoice 12 (QB-7K2) appointment:appt-1", "class Dr. Adams"
    field: str
    ledger: str | None
    qbo: str | None
    kind: str = "changed"  # changed | missing_in_qbo | voided_in_qbo | in_qbo_only | deleted_in_ledger_only | total

    def to_json(self) -> dict[str, Any]:
        return {
            "document": self.document,
            "field": self.field,
            "ledger": self.ledger,
            "qbo": self.qbo,
            "kind": self.kind,
        }


@dataclass
class QboBooks:
    """What ``verify`` read from the QBO company (entity -> rows), with names for classes / departments / items."""

    invoices: list[dict[str, Any]]
    payments: list[dict[str, Any]]
    credit_memos: list[dict[str, Any]]
    names: dict[str, dict[str, str]]  # Class / Department / Item -> Id -> name
    reads: int = 0


@dataclass
class Verification:
    qbo_totals: dict[str, Any]
    differences: list[Difference]
    reads: int

    @property
    def matches(self) -> bool:
        return not self.differences

    def to_json(self) -> dict[str, Any]:
        return {
            "qbo_totals": self.qbo_totals,
            "differences": [d.to_json() for d in self.differences],
            "qbo_reads": self.reads,
            "matches": self.matches,
        }


def voided(row: Mapping[str, Any]) -> bool:
    return str(row.get("PrivateNote", "")).startswith("Voided")


def _ref(row: Mapping[str, Any], key: str) -> str | None:
    ref = row.get(key)
    return str(ref["value"]) if isinstance(ref, Mapping) and ref.get("value") else None


def _doc(entity: str, row_or_slot: Mapping[str, Any], owner: str | None) -> str:
    num = row_or_slot.get("DocNumber") or row_or_slot.get("doc_number")
    ident = row_or_slot.get("Id") or row_or_slot.get("id")
    return f"{entity} {ident}" + (f" ({num})" if num else "") + (f" {owner}" if owner else "")


def _invoice_class(row: Mapping[str, Any]) -> str | None:
    header = _ref(row, "ClassRef")
    if header:
        return header
    for ln in row.get("Line", []):
        c = _ref(ln.get("SalesItemLineDetail") or {}, "ClassRef")
        if c:
            return c
    return None


def verify(
    led: Ledger, report: RevenueReport, books: QboBooks, mappings: TenantMappings, period: Period
) -> Verification:
    """Compare the ledger with the QBO company: every document qbsync wrote (invoices of the period's visits,
    the payments and credit memos of its money) and the period's totals by class, department and item."""
    names = books.names
    cls, dept, item = names.get("Class", {}), names.get("Department", {}), names.get("Item", {})
    diffs: list[Difference] = []
    invoices = {str(r["Id"]): r for r in books.invoices}
    visits = period_visits(led, period)
    known_ids: set[str] = set()
    # ---- invoices of the period's visits
    for v in visits:
        qid = str(v.invoice["id"])
        known_ids.add(qid)
        doc = _doc("Invoice", v.invoice, v.key)
        row = invoices.get(qid)
        if row is None:
            diffs.append(Difference(doc, "exists", "active", "deleted", "missing_in_qbo"))
            continue
        if voided(row):
            diffs.append(Difference(doc, "state", "active", "voided", "voided_in_qbo"))
            continue
        ledger_total = money(v.invoice["total"]) if v.invoice.get("total") is not None else v.charges
        _cmp(diffs, doc, "TotalAmt", ledger_total, money(row.get("TotalAmt", 0)))
        v.qbo_balance = money(row.get("Balance", 0))
        _cmp(diffs, doc, "Balance", v.balance, v.qbo_balance)
        want_class = mappings.providers.get(v.provider) if mappings.providers else None
        got_class = cls.get(_invoice_class(row) or "", _invoice_class(row))
        if want_class is not None and got_class != want_class:
            diffs.append(Difference(doc, "ClassRef", want_class, got_class))
        want_dept = mappings.locations.get(v.location) if mappings.locations else None
        got_dept = dept.get(_ref(row, "DepartmentRef") or "", _ref(row, "DepartmentRef"))
        if want_dept is not None and got_dept != want_dept:
            diffs.append(Difference(doc, "DepartmentRef", want_dept, got_dept))
        ledger_items: dict[str, Decimal] = defaultdict(Decimal)
        for ln in v.lines:
            ledger_items[ln.category] += ln.gross
        discount = sum((ln.discount for ln in v.lines), ZERO)
        qbo_items: dict[str, Decimal] = defaultdict(Decimal)
        qbo_discount = ZERO
        for ln in row.get("Line", []):
            if ln.get("DetailType") == "SalesItemLineDetail":
                iid = _ref(ln["SalesItemLineDetail"], "ItemRef") or "?"
                qbo_items[item.get(iid, iid)] += money(ln.get("Amount", 0))
            elif ln.get("DetailType") == "DiscountLineDetail":
                qbo_discount += money(ln.get("Amount", 0))
        for name in sorted(set(ledger_items) | set(qbo_items)):
            _cmp(diffs, doc, f"Line[{name}].Amount", ledger_items.get(name), qbo_items.get(name))
        _cmp(diffs, doc, "Discount", discount, qbo_discount)
    # ---- money documents of the period's visits
    period_keys = {v.key for v in visits}
    pay_rows = {str(r["Id"]): r for r in books.payments}
    memo_rows = {str(r["Id"]): r for r in books.credit_memos}
    for r in sorted(led.rows.values(), key=lambda x: x.object_key):
        if r.kind not in ("payment", "remittance", "credit") or not _touches(r, period_keys, period):
            continue
        for slot_name, slot in sorted(r.qbo.items()):
            entity = str(slot.get("type", "Payment"))
            rows = memo_rows if entity == "CreditMemo" else pay_rows if entity == "Payment" else None
            if rows is None or not slot.get("id"):
                continue
            qid = str(slot["id"])
            known_ids.add(qid)
            doc = _doc(entity, slot, f"{r.object_key} {slot_name}")
            row = rows.get(qid)
            state = slot.get("state", "active")
            if state == "deleted":
                if row is not None:
                    diffs.append(Difference(doc, "exists", "deleted", "active", "deleted_in_ledger_only"))
                continue
            if row is None:
                diffs.append(Difference(doc, "exists", state, "deleted", "missing_in_qbo"))
            elif voided(row) and state != "voided":
                diffs.append(Difference(doc, "state", state, "voided", "voided_in_qbo"))
            elif slot.get("total") is not None:
                _cmp(diffs, doc, "TotalAmt", money(slot["total"]), money(row.get("TotalAmt", 0)))
    # ---- documents in QBO that no ledger row owns (entered by a user)
    for entity, rows in (("Invoice", invoices), ("Payment", pay_rows), ("CreditMemo", memo_rows)):
        for qid, row in sorted(rows.items()):
            if qid in known_ids or _owned(led, entity, qid) or voided(row) or not period.contains(row.get("TxnDate")):
                continue
            if entity == "Invoice" or money(row.get("TotalAmt", 0)) != 0:
                diffs.append(
                    Difference(
                        _doc(entity, row, None), "exists", None, str(money(row.get("TotalAmt", 0))), "in_qbo_only"
                    )
                )
    # ---- totals by class and department (items are compared per invoice line above: QBO lines are gross, the
    # discount sits on its own line, so a per-item total of net revenue has no QBO counterpart)
    qbo_totals = _qbo_totals(invoices.values(), books, period)
    ledger_by: dict[str, dict[str, Decimal]] = {}
    if mappings.providers:  # a tenant that does not map providers to classes has no class totals to compare
        ledger_by["class"] = {_name(mappings.providers, k): f.invoiced for k, f in report.by["provider"].items()}
    if mappings.locations:
        ledger_by["department"] = {_name(mappings.locations, k): f.invoiced for k, f in report.by["location"].items()}
    for dim, ledger_rows in ledger_by.items():
        merged: dict[str, Decimal] = defaultdict(Decimal)
        for k, a in ledger_rows.items():
            merged[k] += a
        qrows = qbo_totals["by_" + dim]
        for k in sorted(set(merged) | set(qrows)):
            lv, qv = merged.get(k, ZERO), money(qrows.get(k, ZERO))
            if lv != qv:
                diffs.append(Difference(f"{dim} {k}", "invoiced", str(lv), str(qv), "total"))
    for fld, lv in (("invoiced", report.totals.invoiced), ("outstanding", report.totals.outstanding)):
        qv = money(qbo_totals[fld])
        if lv != qv:
            diffs.append(Difference("all invoices", fld, str(lv), str(qv), "total"))
    return Verification(qbo_totals=_json_totals(qbo_totals), differences=diffs, reads=books.reads)


def _name(mapping: Mapping[str, str], key: str) -> str:
    return mapping.get(key, key) if mapping else key


def _touches(r: LedgerRow, visit_keys: set[str], period: Period) -> bool:
    d = r.desired
    targets = (
        [rules.target_key(a) for a in d.get("applies_to", []) or []] if isinstance(d.get("applies_to"), list) else []
    )
    if isinstance(d.get("applies_to"), dict):
        targets.append(rules.target_key(d["applies_to"]))
    targets += [rules.target_key(it) for it in d.get("items", [])]
    if targets:
        return any(t in visit_keys for t in targets)
    return period.contains(d.get("received_on") or d.get("issued_on"))


def _owned(led: Ledger, entity: str, qid: str) -> bool:
    return any(str(s.get("id")) == qid and s.get("type") == entity for r in led.rows.values() for s in r.qbo.values())


def _cmp(diffs: list[Difference], doc: str, fld: str, ledger: Decimal | None, qbo: Decimal | None) -> None:
    if (ledger or ZERO) != (qbo or ZERO):
        diffs.append(Difference(doc, fld, None if ledger is None else str(ledger), None if qbo is None else str(qbo)))


def _qbo_totals(invoices: Iterable[Mapping[str, Any]], books: QboBooks, period: Period) -> dict[str, Any]:
    cls, dept, item = (books.names.get(k, {}) for k in ("Class", "Department", "Item"))
    out: dict[str, Any] = {
        "invoices": 0,
        "invoiced": ZERO,
        "outstanding": ZERO,
        "by_class": defaultdict(Decimal),
        "by_department": defaultdict(Decimal),
        "by_item": defaultdict(Decimal),
    }
    for row in invoices:
        if voided(row) or not period.contains(row.get("TxnDate")):
            continue
        total = money(row.get("TotalAmt", 0))
        out["invoices"] += 1
        out["invoiced"] += total
        out["outstanding"] += money(row.get("Balance", 0))
        c, dp = _invoice_class(row), _ref(row, "DepartmentRef")
        out["by_class"][cls.get(c or "", c or NONE)] += total
        out["by_department"][dept.get(dp or "", dp or NONE)] += total
        for ln in row.get("Line", []):
            if ln.get("DetailType") == "SalesItemLineDetail":
                iid = _ref(ln["SalesItemLineDetail"], "ItemRef") or "?"
                out["by_item"][item.get(iid, iid)] += money(ln.get("Amount", 0))
    return out


def _json_totals(t: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: (
            {n: str(a) for n, a in sorted(v.items())} if isinstance(v, Mapping) else v if isinstance(v, int) else str(v)
        )
        for k, v in t.items()
    }


# ================================================================== drift
ACTIONS = {
    "missing_in_qbo": "deleted in QuickBooks: un-invoice / delete it on the platform, or `qbsync retry {object}` to "
    "re-create it from the platform's version",
    "voided_in_qbo": "voided in QuickBooks only: void it on the platform too, or re-issue it there",
    "changed": "edited in QuickBooks: make the same change on the platform, or `qbsync retry {object}` to put the "
    "platform's version back",
    "changed_in_qbo": "edited in QuickBooks: make the same change on the platform, or `qbsync retry {object}` to put "
    "the platform's version back",
    "deleted_in_ledger_only": "the platform removed it but QuickBooks still has it: delete or void it in QuickBooks, "
    "or `qbsync retry {object}`",
    "in_qbo_only": "entered in QuickBooks by a user, unknown to the platform: enter it on the platform, or leave it "
    "(qbsync does not sync it back)",
}


def drift_from_differences(differences: Iterable[Difference]) -> list[dict[str, Any]]:
    """One drift entry per document (fields merged), with the suggested action."""
    by_doc: dict[str, dict[str, Any]] = {}
    for d in differences:
        if d.kind == "total":
            continue
        e = by_doc.setdefault(d.document, {"document": d.document, "kind": d.kind, "fields": []})
        e["fields"].append({"field": d.field, "ledger": d.ledger, "qbo": d.qbo})
        if d.kind != "changed":
            e["kind"] = d.kind
    out = []
    for e in by_doc.values():
        obj = next((p for p in e["document"].split() if ":" in p), "<object>")
        out.append({**e, "object": obj if obj != "<object>" else None, "action": ACTIONS[e["kind"]].format(object=obj)})
    return out


def drift_from_cdc(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Entries of the CDC sweep's stored drift report (``shared.services.qbo_changes``) with the suggested action."""
    out = []
    for e in report.get("drift", []):
        kind = str(e.get("kind", "changed"))
        obj = str(e.get("object_key", "<object>"))
        out.append(
            {
                "document": f"{e.get('entity')} {e.get('qbo_id')} {obj}",
                "kind": kind,
                "object": obj,
                "fields": [{"field": "ledger", "ledger": e.get("ledger"), "qbo": e.get("qbo")}],
                "action": ACTIONS.get(kind, ACTIONS["changed"]).format(object=obj),
            }
        )
    return out
