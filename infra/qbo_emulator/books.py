"""Write/read operations on a realm's books: create, full/sparse update, delete, void, derived balances.

Callers must hold `realm.lock`. Every operation returns the response entity plus the list of changes
(for webhooks); derived fields (Invoice.Balance, CreditMemo.RemainingCredit, Customer.Balance, LinkedTxn)
are recomputed after each write.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from . import entities as ent
from .store import NAME_LIST, SALES_FORMS, SINGLETONS, Realm, deep_merge
from .util import QboError, business, fmt_ts, money, not_found, required


@dataclass
class Change:
    realm_id: str
    entity: str
    id: str
    operation: str  # Create | Update | Delete | Void | Merge
    ts: float
    deleted_id: str | None = None


def _stale(entity: str, ident: str) -> QboError:
    return QboError(
        "5010",
        "Stale Object Error",
        f"Stale Object Error : You and another user were working on the {entity} Id={ident} at the "
        f"same time. The other user finished before you did, so your work was not saved.",
    )


def _deposited(payment_id: str, deposit_id: str) -> QboError:
    return QboError(
        "6540",
        "Deposited Transaction cannot be changed",
        f"This transaction has been deposited (Deposit Id={deposit_id}). If you want to change or "
        f"delete it, you must edit the deposit it appears on and remove it first. "
        f"(Payment Id={payment_id})",
    )


def read(realm: Realm, entity: str, ident: str) -> dict[str, Any]:
    """Raises: QboError 610 when missing or deleted."""
    obj = realm.get(entity, ident)
    if obj is None:
        raise not_found(entity, ident)
    return ent.present(entity, obj)


def _current(realm: Realm, entity: str, body: dict[str, Any]) -> dict[str, Any]:
    """The stored object an update/delete/void refers to, after the SyncToken check.

    Raises:
        QboError: 2020 no Id/SyncToken, 610 missing, 5010 stale token, 6540 deposited payment.
    """
    ident = body.get("Id")
    if ident in (None, ""):
        raise required("Id")
    if entity in SINGLETONS:
        ident = "1"
    existing = realm.get(entity, str(ident))
    if existing is None:
        raise not_found(entity, str(ident))
    if body.get("SyncToken") in (None, ""):
        raise required("SyncToken")
    if str(body["SyncToken"]) != existing["SyncToken"]:
        raise _stale(entity, str(ident))
    if entity == "Payment":
        dep = ent.deposit_of(realm, existing["Id"])
        if dep:
            raise _deposited(existing["Id"], dep)
    return existing


def _commit(realm: Realm, entity: str, obj: dict[str, Any], existing: dict[str, Any] | None) -> None:
    if existing is None:
        obj["Id"] = realm.new_id()
        obj["SyncToken"] = "0"
        obj["MetaData"] = realm.meta()
    else:
        obj["Id"] = existing["Id"]
        obj["SyncToken"] = str(int(existing["SyncToken"]) + 1)
        meta = realm.meta()
        meta["CreateTime"] = existing["MetaData"]["CreateTime"]
        obj["MetaData"] = meta
    obj["domain"] = "QBO"
    obj["sparse"] = False
    realm.put(entity, obj)


def create(
    realm: Realm, entity: str, body: dict[str, Any], allow_dup: bool = False
) -> tuple[dict[str, Any], list[Change]]:
    """Raises: QboError for any validation failure (nothing is stored then)."""
    if entity in SINGLETONS:
        raise business(f"{entity} cannot be created; update the existing one")
    obj = ent.strip_read_only(entity, ent.clean(body))
    obj.pop("Id", None)
    obj.pop("SyncToken", None)
    ent.validate(realm, entity, obj, allow_dup=allow_dup)
    _commit(realm, entity, obj, None)
    changes = [Change(realm.realm_id, entity, obj["Id"], "Create", realm.clock.now())]
    recompute(realm, skip=(entity, obj["Id"]))
    return read(realm, entity, obj["Id"]), changes


def update(
    realm: Realm, entity: str, body: dict[str, Any], allow_dup: bool = False
) -> tuple[dict[str, Any], list[Change]]:
    """Full update (omitted writable fields are cleared) or sparse update (`"sparse": true`).

    Raises:
        QboError: 610, 5010, 6540 and any validation fault.
    """
    body = ent.clean(body)
    existing = _current(realm, entity, body)
    sparse = bool(body.get("sparse"))
    patch = ent.strip_read_only(entity, body)
    if entity in SINGLETONS:
        obj = deep_merge(existing, patch)
    elif sparse:
        obj = dict(ent.strip_read_only(entity, copy.deepcopy(existing)), **patch)
    else:
        obj = copy.deepcopy(patch)
        if entity in NAME_LIST and "Active" not in obj:
            obj["Active"] = existing.get("Active", True)
    ident = existing["Id"]
    obj["Id"] = ident
    if entity not in SINGLETONS:
        ent.validate(realm, entity, obj, allow_dup=allow_dup)
    if entity in ("Invoice", "CreditMemo"):
        applied = ent.applied_to(realm, entity, ident)
        if applied > money(obj["TotalAmt"]):
            raise business(
                f"The {entity} total ({obj['TotalAmt']}) cannot be less than the payments applied to it ({applied})"
            )
    if entity == "Customer" and obj.get("Active") is False and existing.get("Active") is not False:
        for child in realm.objects["Customer"].values():
            if ent.ref_value(child.get("ParentRef")) == ident and child.get("Active") is not False:
                raise business("You can't make a customer inactive while it has active sub-customers")
    _commit(realm, entity, obj, existing)
    changes = [Change(realm.realm_id, entity, ident, "Update", realm.clock.now())]
    recompute(realm, skip=(entity, ident))
    return read(realm, entity, ident), changes


def delete(realm: Realm, entity: str, body: dict[str, Any]) -> tuple[dict[str, Any], list[Change]]:
    """Hard delete of a transaction.

    Raises:
        QboError: 6000 for name lists / linked transactions, 610, 5010, 6540.
    """
    if entity in NAME_LIST or entity in SINGLETONS:
        raise business(
            f"Operation Delete is not supported for {entity}. Make it inactive instead "
            f"(sparse update with Active=false)."
        )
    body = ent.clean(body)
    existing = _current(realm, entity, body)
    ident = existing["Id"]
    if entity in ("Invoice", "CreditMemo") and ent.applied_to(realm, entity, ident) > 0:
        raise business(
            f"This {entity} has payments or credits applied to it. Unlink or delete the linked "
            f"Payment(s) before deleting the {entity}."
        )
    now = realm.clock.now()
    del realm.objects[entity][ident]
    tomb = {"Id": ident, "status": "Deleted", "domain": "QBO", "MetaData": {"LastUpdatedTime": fmt_ts(now)}}
    realm.deleted[(entity, ident)] = tomb
    realm.changed_at[(entity, ident)] = now
    recompute(realm)
    return {"status": "Deleted", "domain": "QBO", "Id": ident}, [Change(realm.realm_id, entity, ident, "Delete", now)]


def void(
    realm: Realm, entity: str, body: dict[str, Any], via: str, ui: bool = False
) -> tuple[dict[str, Any], list[Change]]:
    """Void. `via` is "void" (operation=void) or "update" (operation=update&include=void).

    `ui=True` acts as a QBO user in the web UI, who may also void credit memos and refund receipts.

    Raises:
        QboError: 6000 when the entity/route does not support void, 610, 5010, 6540.
    """
    allowed = {"Invoice": "void", "Payment": "update", "SalesReceipt": "update"}
    if realm.settings.refundreceipt_void:
        allowed["RefundReceipt"] = "void"
    if ui and entity in ("CreditMemo", "RefundReceipt"):
        allowed[entity] = via
    if entity not in allowed:
        raise business(f"Void is not supported for {entity} through the API")
    if allowed[entity] != via:
        hint = "operation=void" if allowed[entity] == "void" else "operation=update&include=void"
        raise business(f"Void of {entity} must use {hint}")
    body = ent.clean(body)
    existing = _current(realm, entity, body)
    ident = existing["Id"]
    if (
        entity == "Invoice"
        and not realm.settings.void_invoice_with_payments
        and ent.applied_to(realm, entity, ident) > 0
    ):
        raise business("This invoice has payments applied. Unlink the payments before voiding the invoice.")
    obj = copy.deepcopy(existing)
    zero = Decimal(0)
    for line in obj.get("Line", []):
        line["Amount"] = zero
        det = line.get("SalesItemLineDetail")
        if det and "Qty" in det:
            det["Qty"] = zero
    obj["TotalAmt"] = zero
    obj["HomeTotalAmt"] = zero
    if "TxnTaxDetail" in obj:
        obj["TxnTaxDetail"] = {"TotalTax": zero}
    for key in ("Balance", "HomeBalance", "UnappliedAmt", "RemainingCredit"):
        if key in obj:
            obj[key] = zero
    note = obj.get("PrivateNote")
    obj["PrivateNote"] = f"Voided - {note}" if note and not str(note).startswith("Voided") else (note or "Voided")
    _commit(realm, entity, obj, existing)
    recompute(realm, skip=(entity, ident))
    return read(realm, entity, ident), [Change(realm.realm_id, entity, ident, "Void", realm.clock.now())]


def recompute(realm: Realm, skip: tuple[str, str] | None = None) -> None:
    """Re-derive balances and links after a write.

    Invoices/credit memos whose Balance or LinkedTxn changed get a new SyncToken and LastUpdatedTime
    (QBO links the payment onto the invoice), so a client holding an old copy gets 5010 and CDC sees them.
    """
    applied: dict[tuple[str, str], list[tuple[str, Decimal]]] = {}
    for pay in realm.objects["Payment"].values():
        for line in pay.get("Line", []):
            for link in line.get("LinkedTxn", []):
                key = (str(link.get("TxnType")), str(link.get("TxnId")))
                applied.setdefault(key, []).append((pay["Id"], money(line.get("Amount", 0))))
    cust_bal: dict[str, Decimal] = {}
    for entity in ("Invoice", "CreditMemo"):
        for obj in realm.objects[entity].values():
            links = applied.get((entity, obj["Id"]), [])
            remaining = money(obj.get("TotalAmt", 0)) - sum((a for _, a in links), Decimal(0))
            field = "Balance" if entity == "Invoice" else "RemainingCredit"
            new_links = [{"TxnId": pid, "TxnType": "Payment"} for pid in dict.fromkeys(p for p, _ in links)]
            changed = money(obj.get(field, 0)) != remaining or (
                entity == "Invoice" and obj.get("LinkedTxn", []) != new_links
            )
            obj[field] = remaining
            if entity == "Invoice":
                obj["HomeBalance"] = remaining
                obj["LinkedTxn"] = new_links
            else:
                obj["Balance"] = remaining
            if changed and skip != (entity, obj["Id"]):
                obj["SyncToken"] = str(int(obj["SyncToken"]) + 1)
                obj["MetaData"]["LastUpdatedTime"] = fmt_ts(realm.clock.now())
                realm.changed_at[(entity, obj["Id"])] = realm.clock.now()
            cid = ent.ref_value(obj.get("CustomerRef")) or ""
            sign = 1 if entity == "Invoice" else -1
            cust_bal[cid] = cust_bal.get(cid, Decimal(0)) + sign * remaining
    for pay in realm.objects["Payment"].values():
        cid = ent.ref_value(pay.get("CustomerRef")) or ""
        cust_bal[cid] = cust_bal.get(cid, Decimal(0)) - money(pay.get("UnappliedAmt", 0))
    customers = realm.objects["Customer"]
    for cust in customers.values():
        cust["Balance"] = cust_bal.get(cust["Id"], Decimal(0))
    # BalanceWithJobs rolls sub-customer balances up to every ancestor.
    for cust in customers.values():
        cust["BalanceWithJobs"] = cust["Balance"]
    for cust in customers.values():
        parent_id = ent.ref_value(cust.get("ParentRef"))
        seen = 0
        while parent_id and parent_id in customers and seen < 10:
            customers[parent_id]["BalanceWithJobs"] += cust["Balance"]
            parent_id = ent.ref_value(customers[parent_id].get("ParentRef"))
            seen += 1


def is_sales_form(entity: str) -> bool:
    return entity in SALES_FORMS
