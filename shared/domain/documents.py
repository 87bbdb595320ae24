"""Builders of the QBO documents qbsync posts. Pure: every QBO id they need is resolved beforehand.

A source object maps to one or more QBO documents, each in a named *slot* (``invoice``,
``payment``, ``payment:<patient>``, ``creditmemo:<n>`` ...). The reconcile planner compares the desired
documents of each slot with what was synced and decides create / update / void / delete.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

CENT = Decimal("0.01")


def money(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


def num(value: Decimal) -> float | int:
    """QBO's JSON uses numbers; integral amounts as ints keep payloads short and exact."""
    return int(value) if value == value.to_integral_value() else float(value)


@dataclass(frozen=True)
class CompanyPrefs:
    """The parts of a company's Preferences that change what qbsync may send."""

    class_tracking_per_txn: bool = False
    class_tracking_per_line: bool = False
    track_departments: bool = False
    allow_discount: bool = True
    book_close_date: str | None = None

    @classmethod
    def from_summary(cls, summary: dict[str, Any]) -> CompanyPrefs:
        return cls(
            class_tracking_per_txn=bool(summary.get("ClassTrackingPerTxn", False)),
            class_tracking_per_line=bool(summary.get("ClassTrackingPerTxnLine", False)),
            track_departments=bool(summary.get("TrackDepartments", False)),
            allow_discount=bool(summary.get("AllowDiscount", True)),
            book_close_date=summary.get("BookCloseDate"),
        )


@dataclass(frozen=True)
class ResolvedLine:
    item_id: str
    qty: Decimal
    unit_price: Decimal
    service_date: str
    description: str
    discount: Decimal = Decimal(0)
    taxable: bool = False
    class_id: str | None = None


@dataclass(frozen=True)
class SalesDocInput:
    """Everything needed to build an Invoice or CreditMemo."""

    customer_id: str
    doc_number: str
    txn_date: str
    lines: list[ResolvedLine]
    private_note: str
    class_id: str | None = None
    department_id: str | None = None
    memo: str | None = None
    due_date: str | None = None
    tax_code_id: str | None = None  # None: tax not pushed
    discount_account_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def line_amount(qty: Decimal, unit_price: Decimal) -> Decimal:
    # QBO checks Amount == Qty x UnitPrice (6070): compute from the same rounded inputs it will use.
    return money(qty * unit_price)


def build_sales_doc(inp: SalesDocInput, prefs: CompanyPrefs) -> dict[str, Any]:
    """An Invoice / CreditMemo body. Header class goes in ClassRef only when the company tracks classes per
    transaction; per-line ClassRef only when it tracks them per line."""
    lines: list[dict[str, Any]] = []
    total_discount = Decimal(0)
    for ln in inp.lines:
        detail: dict[str, Any] = {
            "ItemRef": {"value": ln.item_id},
            "Qty": num(ln.qty),
            "UnitPrice": num(money(ln.unit_price)),
            "ServiceDate": ln.service_date,
        }
        if inp.tax_code_id is not None:
            detail["TaxCodeRef"] = {"value": "TAX" if ln.taxable else "NON"}
        line_class = ln.class_id or inp.class_id
        if prefs.class_tracking_per_line and line_class:
            detail["ClassRef"] = {"value": line_class}
        lines.append(
            {
                "DetailType": "SalesItemLineDetail",
                "Amount": num(line_amount(ln.qty, money(ln.unit_price))),
                "Description": ln.description[:4000],
                "SalesItemLineDetail": detail,
            }
        )
        total_discount += money(ln.discount)
    if total_discount > 0:
        disc: dict[str, Any] = {"PercentBased": False}
        if inp.discount_account_id:
            disc["DiscountAccountRef"] = {"value": inp.discount_account_id}
        lines.append({"DetailType": "DiscountLineDetail", "Amount": num(total_discount), "DiscountLineDetail": disc})
    doc: dict[str, Any] = {
        "CustomerRef": {"value": inp.customer_id},
        "DocNumber": inp.doc_number,
        "TxnDate": inp.txn_date,
        "PrivateNote": inp.private_note,
        "Line": lines,
    }
    if inp.due_date:
        doc["DueDate"] = inp.due_date
    if inp.memo:
        doc["CustomerMemo"] = {"value": inp.memo[:1000]}
    if prefs.class_tracking_per_txn and inp.class_id:
        doc["ClassRef"] = {"value": inp.class_id}
    if inp.department_id:
        doc["DepartmentRef"] = {"value": inp.department_id}
    if inp.tax_code_id is not None:
        doc["TxnTaxDetail"] = {"TxnTaxCodeRef": {"value": inp.tax_code_id}}
    doc.update(inp.extra)
    return doc


def sales_doc_total(doc: dict[str, Any]) -> Decimal:
    """The pre-tax total QBO will compute for a sales document we built."""
    total = Decimal(0)
    for ln in doc.get("Line", []):
        if ln["DetailType"] == "SalesItemLineDetail":
            total += money(ln["Amount"])
        elif ln["DetailType"] == "DiscountLineDetail":
            total -= money(ln["Amount"])
    return total


@dataclass(frozen=True)
class PaymentInput:
    customer_id: str
    total: Decimal
    txn_date: str
    private_note: str
    applied: list[tuple[str, str, Decimal]] = field(default_factory=list)  # (TxnId, TxnType, amount)
    method_id: str | None = None
    reference: str | None = None
    deposit_account_id: str | None = None


def build_payment(inp: PaymentInput) -> dict[str, Any]:
    """A Payment; lines link invoices (or credit memos). Unlinked remainder stays unapplied on the customer."""
    doc: dict[str, Any] = {
        "CustomerRef": {"value": inp.customer_id},
        "TotalAmt": num(money(inp.total)),
        "TxnDate": inp.txn_date,
        "PrivateNote": inp.private_note,
        "Line": [
            {"Amount": num(money(amount)), "LinkedTxn": [{"TxnId": txn_id, "TxnType": txn_type}]}
            for txn_id, txn_type, amount in inp.applied
            if amount > 0
        ],
    }
    if inp.method_id:
        doc["PaymentMethodRef"] = {"value": inp.method_id}
    if inp.reference:
        doc["PaymentRefNum"] = inp.reference[:21]
    if inp.deposit_account_id:
        doc["DepositToAccountRef"] = {"value": inp.deposit_account_id}
    return doc


def fingerprint(doc: dict[str, Any]) -> str:
    """A stable digest of the content qbsync controls, to tell whether an update is needed."""
    content = {k: v for k, v in doc.items() if k not in {"Id", "SyncToken", "sparse"}}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:32]
