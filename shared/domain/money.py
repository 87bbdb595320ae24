"""Money-movement rules: where payments, remittances and credits go, and in which document slots. Pure.

A money object (``payment:*``, ``remittance:*``, ``credit:*``) maps to QBO documents in named slots:

* ``payment``            the Payment of a platform payment (copay, patient or insurer payment)
* ``refund``             the RefundReceipt of a refunded payment (refund policy ``refund_receipt``)
* ``payment:{patient}``  one Payment per patient (customer) covered by an insurer remittance
* ``credit:{i}.{j}``     the CreditMemo of adjustment ``j`` of remittance item ``i``
* ``apply:{i}.{j}``      the zero-amount Payment applying that credit memo to the visit's invoice
* ``creditmemo``         the CreditMemo of a platform credit; ``apply`` applies it to its invoice

The engine resolves each allocation's *target* (the appointment / invoice object) to a ``Target``:
``ready`` (its QBO invoice exists: link it), ``pending`` (it may still be invoiced: wait, or post the money
unapplied and link later) or ``closed`` (cancelled / voided / un-invoiced: the money stays unapplied).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from shared.domain.documents import money
from shared.domain.tenant import TenantSettings

TargetState = Literal["ready", "pending", "closed"]

# Deletions run in this order (an applying payment before the credit memo it applies), creations in reverse.
SLOT_ORDER = ("apply", "payment", "refund", "credit", "creditmemo")


@dataclass(frozen=True)
class Target:
    key: str  # "appointment:{id}" or "invoice:{id}"
    state: TargetState
    invoice_id: str | None = None  # the QBO Invoice Id when ready
    item_id: str | None = None  # the QBO item of the invoice's first line (for credit / refund lines)


def target_key(alloc: dict[str, Any]) -> str:
    """The ledger key of the object an allocation points at."""
    if alloc.get("appointment_id"):
        return f"appointment:{alloc['appointment_id']}"
    return f"invoice:{alloc['invoice_id']}"


def target_state(lifecycle: str | None, invoice_slot: dict[str, Any] | None, wants_invoice: bool) -> TargetState:
    """Whether money for an appointment / invoice object can be linked now, later, or not at all."""
    if invoice_slot and invoice_slot.get("id") and invoice_slot.get("state", "active") == "active":
        return "ready"
    if lifecycle is None or lifecycle == "draft" or wants_invoice:
        return "pending"  # not booked/completed yet, or invoiced soon
    return "closed"


@dataclass(frozen=True)
class Link:
    target: str
    invoice_id: str
    amount: Decimal


@dataclass
class PaymentShape:
    """What a Payment should be: its total and the invoice links it can carry now."""

    total: Decimal
    links: list[Link] = field(default_factory=list)
    waiting_on: str | None = None  # a target whose invoice does not exist yet
    hold: bool = False  # wait instead of posting (nothing to post yet)
    delete: bool = False  # fully refunded / reversed: the payment should not exist

    @property
    def unapplied(self) -> Decimal:
        return self.total - sum((ln.amount for ln in self.links), Decimal(0))


def shape_payment(
    amount: Any,
    allocations: list[tuple[str, Any]],
    targets: dict[str, Target],
    *,
    may_post_unapplied: bool,
    refunded: Any = 0,
    reverse_refund: bool = False,
) -> PaymentShape:
    """The Payment for ``amount`` allocated to targets (``(target key, amount)`` pairs).

    Ready targets are linked; a pending target either holds the payment (``may_post_unapplied`` False) or leaves
    its amount unapplied until the invoice exists; closed targets leave their amount unapplied for good.
    With ``reverse_refund`` a refund reduces the payment: unapplied money first, then links from the last.
    """
    total = money(amount)
    links: list[Link] = []
    waiting: str | None = None
    for key, alloc_amount in allocations:
        target = targets[key]
        amt = money(alloc_amount)
        if target.state == "ready" and target.invoice_id and amt > 0:
            links.append(Link(key, target.invoice_id, amt))
        elif target.state in ("pending", "closed") and waiting is None:
            waiting = key  # closed targets may be invoiced again (un-invoice → finalize): stay woken
    shape = PaymentShape(total=total, links=links, waiting_on=waiting)
    if waiting and not may_post_unapplied and targets[waiting].state == "pending":
        shape.hold = True
    if reverse_refund and money(refunded) > 0:
        _reduce(shape, money(refunded))
    return shape


def _reduce(shape: PaymentShape, refunded: Decimal) -> None:
    """Take a refund out of the payment: the unapplied part first, then the links, last first."""
    if refunded >= shape.total:
        shape.delete = True
        shape.total = Decimal(0)
        shape.links = []
        return
    shape.total -= refunded
    excess = -shape.unapplied
    while excess > 0 and shape.links:
        last = shape.links[-1]
        cut = min(excess, last.amount)
        excess -= cut
        if cut == last.amount:
            shape.links.pop()
        else:
            shape.links[-1] = Link(last.target, last.invoice_id, last.amount - cut)


def credit_prefix(kind: str, settings: TenantSettings) -> str:
    """Write-offs carry the write-off prefix; contractual adjustments and courtesy credits the credit prefix."""
    return settings.write_off_prefix if kind == "write_off" else settings.credit_prefix


def credit_doc_number(prefix: str, tag: str) -> str:
    """DocNumber of a credit memo: the reason prefix, then a stable tag (≤ 21 characters)."""
    return f"{prefix}{tag}"[:21]


@dataclass(frozen=True)
class AdjustmentSlot:
    credit_slot: str  # credit:{i}.{j}
    apply_slot: str  # apply:{i}.{j}
    kind: str
    amount: Decimal
    target: str
    patient_id: str


@dataclass
class RemittancePlan:
    payments: dict[str, list[tuple[str, Any]]]  # patient id -> [(target key, amount)]
    adjustments: list[AdjustmentSlot]

    def patients(self) -> list[str]:
        return sorted({*self.payments, *(a.patient_id for a in self.adjustments)})


def plan_remittance(items: list[dict[str, Any]]) -> RemittancePlan:
    """Group a remittance's items per patient (one Payment each) and list its adjustments (credit memos)."""
    payments: dict[str, list[tuple[str, Any]]] = {}
    adjustments: list[AdjustmentSlot] = []
    for i, it in enumerate(items):
        key = target_key(it)
        payments.setdefault(it["patient_id"], []).append((key, it["amount"]))
        for j, adj in enumerate(it.get("adjustments", [])):
            amt = money(adj["amount"])
            if amt <= 0:
                continue
            adjustments.append(
                AdjustmentSlot(f"credit:{i}.{j}", f"apply:{i}.{j}", adj["kind"], amt, key, it["patient_id"])
            )
    return RemittancePlan(payments, adjustments)


def slot_rank(slot: str) -> int:
    """Position of a slot's family in ``SLOT_ORDER`` (deletions ascending, creations descending)."""
    family = slot.split(":", 1)[0]
    return SLOT_ORDER.index(family) if family in SLOT_ORDER else len(SLOT_ORDER)


def parse_marker_candidates(note: str) -> list[tuple[str, str]]:
    """(object key, slot) pairs a ``qbsync:{tag}:{object_key}:{slot}`` marker may stand for.

    Ids may contain ``:``, so every split is offered; the caller keeps the one its ledger confirms.
    """
    text = note.removeprefix("Voided - ")
    if not text.startswith("qbsync:"):
        return []
    parts = text.split(":")[2:]
    out = []
    for cut in range(2, len(parts)):
        out.append((":".join(parts[:cut]), ":".join(parts[cut:])))
    return out
