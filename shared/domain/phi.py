"""The PHI guard: every outbound QBO payload is checked against an allow-list before it is sent.

Only amounts, dates, service codes, provider / location / payer categories (as QBO refs), ids, the
customer display name built by the naming policy and qbsync's own markers may leave. Anything else
(names, e-mail, phone, addresses, notes, birth dates, diagnosis codes, member ids) is blocked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from shared.domain.errors import PhiLeakBlocked

_REF = {"value", "name", "type"}
_LINE = {
    "Id",
    "LineNum",
    "Amount",
    "Description",
    "DetailType",
    "SalesItemLineDetail",
    "DiscountLineDetail",
    "SubTotalLineDetail",
    "DescriptionLineDetail",
    "LinkedTxn",
}
_SALES_DETAIL = {"ItemRef", "Qty", "UnitPrice", "ServiceDate", "ClassRef", "TaxCodeRef", "ItemAccountRef"}
_DISCOUNT_DETAIL = {"PercentBased", "DiscountPercent", "DiscountAccountRef", "ClassRef", "TaxCodeRef"}
_LINKED = {"TxnId", "TxnType", "TxnLineId"}
_TXN_COMMON = {
    "Id",
    "SyncToken",
    "sparse",
    "DocNumber",
    "TxnDate",
    "DueDate",
    "CustomerRef",
    "Line",
    "PrivateNote",
    "CustomerMemo",
    "ClassRef",
    "DepartmentRef",
    "TxnTaxDetail",
    "ApplyTaxAfterDiscount",
    "SalesTermRef",
}

# Allowed top-level keys per entity.
ALLOWED: dict[str, set[str]] = {
    "Customer": {
        "Id",
        "SyncToken",
        "sparse",
        "DisplayName",
        "Job",
        "ParentRef",
        "BillWithParent",
        "Active",
        "Notes",
        "Taxable",
        "PrintOnCheckName",
    },
    "Invoice": _TXN_COMMON,
    "CreditMemo": _TXN_COMMON,
    "RefundReceipt": _TXN_COMMON | {"DepositToAccountRef", "PaymentMethodRef", "PaymentRefNum"},
    "Payment": {
        "Id",
        "SyncToken",
        "sparse",
        "TxnDate",
        "CustomerRef",
        "TotalAmt",
        "Line",
        "PrivateNote",
        "PaymentMethodRef",
        "PaymentRefNum",
        "DepositToAccountRef",
        "ProcessPayment",
    },
    "Item": {
        "Id",
        "SyncToken",
        "sparse",
        "Name",
        "Type",
        "IncomeAccountRef",
        "Description",
        "Active",
        "Taxable",
    },
}
_NESTED: dict[str, set[str]] = {
    "Line": _LINE,
    "SalesItemLineDetail": _SALES_DETAIL,
    "DiscountLineDetail": _DISCOUNT_DETAIL,
    "SubTotalLineDetail": set(),
    "DescriptionLineDetail": {"ServiceDate", "TaxCodeRef"},
    "LinkedTxn": _LINKED,
    "TxnTaxDetail": {"TxnTaxCodeRef", "TotalTax"},
    "CustomerMemo": {"value"},
}


def check_payload(entity: str, payload: dict[str, Any], forbidden_values: Iterable[str] = ()) -> None:
    """Raise PhiLeakBlocked if ``payload`` has a key outside the allow-list for ``entity`` or contains any of
    ``forbidden_values`` (e.g. the patient's name, e-mail, member id) anywhere in a string."""
    allowed = ALLOWED.get(entity)
    if allowed is None:
        raise PhiLeakBlocked(f"no allow-list for QBO entity {entity}", entity=entity)
    _check_keys(entity, payload, allowed, path=entity)
    # Whole-word matches: a patient named "Lee" must not block an item called "Sleep study".
    needles = [
        re.compile(rf"(?<!\w){re.escape(v.strip())}(?!\w)", re.IGNORECASE)
        for v in forbidden_values
        if v and len(v.strip()) >= 3
    ]
    if needles:
        for path, text in _strings(payload, entity):
            for needle in needles:
                if needle.search(text):
                    raise PhiLeakBlocked(
                        "a protected value appeared in an outbound field",
                        suggested_fix="Check the naming policy and memo fields; protected values never leave.",
                        entity=entity,
                        path=path,
                    )


def _check_keys(entity: str, node: dict[str, Any], allowed: set[str], path: str) -> None:
    for key, value in node.items():
        if key not in allowed:
            raise PhiLeakBlocked(
                f"field {path}.{key} is not on the allow-list",
                suggested_fix="Only financial fields leave for QuickBooks; remove the field from the mapping.",
                entity=entity,
                path=f"{path}.{key}",
            )
        if key.endswith("Ref") or key == "TxnTaxCodeRef":
            if isinstance(value, dict):
                _check_keys(entity, value, _REF, f"{path}.{key}")
            continue
        nested = _NESTED.get(key)
        if nested is None:
            continue
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if isinstance(item, dict):
                _check_keys(entity, item, nested, f"{path}.{key}[{i}]")


def _strings(node: Any, path: str) -> Iterable[tuple[str, str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{path}[{i}]")
