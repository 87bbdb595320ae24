"""Per-entity validation, defaults and computed totals (what QBO checks and fills in on a write)."""

from __future__ import annotations

import copy
import re
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from .store import NAME_LIST, PEOPLE, SALES_FORMS, Realm
from .util import QboError, business, invalid_ref, money, not_found, parse_date, required, round2, today

USD = {"value": "USD", "name": "United States Dollar"}
# Fields QBO computes; whatever the client sends for them is ignored.
READ_ONLY_COMMON = {
    "MetaData",
    "domain",
    "status",
    "FullyQualifiedName",
    "Level",
    "BalanceWithJobs",
    "HomeBalance",
    "HomeTotalAmt",
    "UnappliedAmt",
    "RemainingCredit",
    "CurrentBalance",
    "CurrentBalanceWithSubAccounts",
}
READ_ONLY_SALES = {"TotalAmt", "Balance", "LinkedTxn"}
CLASSIFICATION = {
    "Bank": "Asset",
    "Other Current Asset": "Asset",
    "Fixed Asset": "Asset",
    "Other Asset": "Asset",
    "Accounts Receivable": "Asset",
    "Equity": "Equity",
    "Expense": "Expense",
    "Other Expense": "Expense",
    "Cost of Goods Sold": "Expense",
    "Accounts Payable": "Liability",
    "Credit Card": "Liability",
    "Long Term Liability": "Liability",
    "Other Current Liability": "Liability",
    "Income": "Revenue",
    "Other Income": "Revenue",
}
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def clean(value: Any) -> Any:
    """Drop empty strings and nulls: QBO treats them as 'not supplied'.

    python-quickbooks sends many "" fields."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items() if v is not None and v != ""}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def ref_value(ref: Any) -> str | None:
    if isinstance(ref, dict):
        val = ref.get("value")
        return None if val in (None, "") else str(val)
    if ref in (None, ""):
        return None
    return str(ref)


def check_ref(realm: Realm, entity: str, ref: Any, label: str | None = None) -> dict[str, Any] | None:
    """Resolve a reference; None when absent.

    Raises:
        QboError: 2500 when it points at a missing or inactive object.
    """
    ident = ref_value(ref)
    if ident is None:
        return None
    obj = realm.get(entity, ident)
    if obj is None or obj.get("Active") is False:
        raise invalid_ref(label or entity, ident)
    return obj


def named_ref(obj: dict[str, Any], name_field: str = "Name") -> dict[str, Any]:
    ref = {"value": obj["Id"]}
    name = obj.get("FullyQualifiedName") or obj.get(name_field) or obj.get("DisplayName")
    if name:
        ref["name"] = name
    return ref


def check_txn_date(realm: Realm, obj: dict[str, Any]) -> None:
    """Default TxnDate to today and enforce the closed-books date.

    Raises:
        QboError: 6210 when TxnDate <= BookCloseDate; 2070 on a bad date.
    """
    obj.setdefault("TxnDate", today(realm.clock.now()))
    txn_date = parse_date(obj["TxnDate"], "TxnDate")
    obj["TxnDate"] = txn_date.isoformat()
    close = realm.pref("AccountingInfoPrefs", "BookCloseDate")
    if close and txn_date <= parse_date(close, "BookCloseDate"):
        raise QboError(
            "6210",
            "Account Period Closed, Cannot Update Through Services API",
            f"The account period has closed and the books are locked. TxnDate {txn_date} is on or "
            f"before BookCloseDate {close}",
            element="TxnDate",
        )


def check_class_dept(realm: Realm, holder: dict[str, Any], line: bool) -> None:
    """ClassRef / DepartmentRef are accepted only when the company tracks them.

    Raises:
        QboError: 6000 when tracking is off, 2500 for a missing/inactive class or department.
    """
    if "ClassRef" in holder:
        pref = "ClassTrackingPerTxnLine" if line else "ClassTrackingPerTxn"
        if not realm.pref("AccountingInfoPrefs", pref):
            where = "line" if line else "transaction"
            raise business(
                f"ClassRef is not allowed: class tracking per {where} is turned off "
                f"(Preferences.AccountingInfoPrefs.{pref} = false)"
            )
        cls = check_ref(realm, "Class", holder["ClassRef"])
        if cls:
            holder["ClassRef"] = named_ref(cls)
    if "DepartmentRef" in holder:
        if line:
            raise business("DepartmentRef is only allowed on the transaction header")
        if not realm.pref("AccountingInfoPrefs", "TrackDepartments"):
            raise business(
                "DepartmentRef is not allowed: location tracking is turned off "
                "(Preferences.AccountingInfoPrefs.TrackDepartments = false)"
            )
        dept = check_ref(realm, "Department", holder["DepartmentRef"])
        if dept:
            holder["DepartmentRef"] = named_ref(dept)


def check_docnumber(realm: Realm, entity: str, obj: dict[str, Any], allow_dup: bool) -> None:
    """Auto-number or check DocNumber.

    Raises:
        QboError: 2050 when longer than 21 chars, 6140 when already used by another object of the entity.
    """
    doc = obj.get("DocNumber")
    if doc is None:
        if not realm.pref("SalesFormsPrefs", "CustomTxnNumbers"):
            obj["DocNumber"] = realm.next_docnum(entity)
        return
    doc = str(doc)
    obj["DocNumber"] = doc
    if len(doc) > 21:
        raise QboError(
            "2050",
            "String length is either shorter or longer than supported by specification",
            f"String length specified does not match the supported length. Min:0 Max:21 supplied:{len(doc)}",
            element="DocNumber",
        )
    if allow_dup:
        return
    for other in realm.objects[entity].values():
        if other.get("DocNumber") == doc and other["Id"] != obj.get("Id"):
            raise QboError(
                "6140",
                "Duplicate Document Number Error",
                f"Duplicate Document Number Error : You must specify a different number. This number "
                f"has already been used. DocNumber={doc} is assigned to TxnType={entity} with "
                f"TxnId={other['Id']}",
            )


# ---------------------------------------------------------------------------------------------------------
# name lists
# ---------------------------------------------------------------------------------------------------------
def _unique_name(realm: Realm, entities: tuple[str, ...], field: str, name: str, self_id: str | None) -> None:
    """Raises: QboError 6240 when another object (inactive too, per setting) already uses the name."""
    for ent in entities:
        for other in realm.objects[ent].values():
            if other["Id"] == self_id:
                continue
            if str(other.get(field, "")).lower() == name.lower():
                if other.get("Active") is False and not realm.settings.inactive_names_block:
                    continue
                raise QboError(
                    "6240",
                    "Duplicate Name Exists Error",
                    f"The name supplied already exists. : Another customer, vendor or employee is "
                    f"already using this name. Please use a different name. ({ent} Id={other['Id']})"
                    if ent in PEOPLE
                    else f"The name supplied already exists. : {name} ({ent} Id={other['Id']})",
                )


def validate_person(realm: Realm, entity: str, obj: dict[str, Any]) -> None:
    """Customer / Vendor / Employee.

    Raises:
        QboError: 6080 no name, 6240 duplicate DisplayName, 2500 bad ParentRef, 2210 bad e-mail, 6000 depth.
    """
    if not obj.get("DisplayName"):
        parts = [obj.get(k) for k in ("Title", "GivenName", "MiddleName", "FamilyName", "Suffix") if obj.get(k)]
        name = " ".join(str(p) for p in parts) or obj.get("CompanyName") or obj.get("PrintOnCheckName")
        if not name:
            raise QboError(
                "6080",
                "No Name Provided",
                "Please provide at least one of Title, GivenName, MiddleName, FamilyName, Suffix, "
                "CompanyName, PrintOnCheckName or DisplayName",
            )
        obj["DisplayName"] = name
    if ":" in obj["DisplayName"]:
        raise business("DisplayName cannot contain a colon (:)")
    _unique_name(realm, PEOPLE, "DisplayName", obj["DisplayName"], obj.get("Id"))
    email = obj.get("PrimaryEmailAddr", {}).get("Address") if isinstance(obj.get("PrimaryEmailAddr"), dict) else None
    if email and not EMAIL_RE.match(email):
        raise QboError(
            "2210",
            "Email Address does not conform to the syntax rules of RFC 822",
            f"Email Address does not conform to the syntax rules of RFC 822: {email}",
            element="PrimaryEmailAddr",
        )
    obj.setdefault("Active", True)
    obj["PrintOnCheckName"] = obj.get("PrintOnCheckName", obj["DisplayName"])
    obj["FullyQualifiedName"] = obj["DisplayName"]
    if entity != "Customer":
        return
    obj.setdefault("Taxable", False)
    obj.setdefault("Job", False)
    obj.setdefault("BillWithParent", False)
    obj.setdefault("PreferredDeliveryMethod", "Print")
    obj.setdefault("CurrencyRef", dict(USD))
    obj.setdefault("Balance", Decimal(0))
    obj.setdefault("BalanceWithJobs", Decimal(0))
    if ref_value(obj.get("ParentRef")):
        parent = check_ref(realm, "Customer", obj["ParentRef"], "Parent customer")
        assert parent is not None
        if parent["Id"] == obj.get("Id"):
            raise business("A customer cannot be its own parent")
        level = int(parent.get("Level", 0)) + 1
        if level > 4:
            raise business("Sub-customers can be nested at most 5 levels deep")
        obj["ParentRef"] = {"value": parent["Id"]}
        obj["Level"] = level
        obj["Job"] = bool(obj.get("Job", True))
        obj["FullyQualifiedName"] = f"{parent['FullyQualifiedName']}:{obj['DisplayName']}"
    else:
        obj.pop("ParentRef", None)
        obj["Level"] = 0
        obj["Job"] = False
        obj["BillWithParent"] = False


def validate_named(realm: Realm, entity: str, obj: dict[str, Any]) -> None:
    """Item, Account, Class, Department, PaymentMethod, Term.

    Raises:
        QboError: 2020 missing Name/Type/IncomeAccountRef, 6240 duplicate, 2500 bad refs.
    """
    if not obj.get("Name"):
        raise required("Name")
    _unique_name(realm, (entity,), "Name", obj["Name"], obj.get("Id"))
    obj.setdefault("Active", True)
    obj["FullyQualifiedName"] = obj["Name"]
    if ref_value(obj.get("ParentRef")):
        parent = check_ref(realm, entity, obj["ParentRef"], f"Parent {entity}")
        assert parent is not None
        obj["FullyQualifiedName"] = f"{parent['FullyQualifiedName']}:{obj['Name']}"
        obj["ParentRef"] = {"value": parent["Id"]}
    if entity == "Item":
        if not obj.get("Type"):
            raise required("Type")
        if obj["Type"] not in ("Service", "NonInventory", "Inventory", "Category", "Group"):
            raise QboError("2170", "Invalid Enumeration", f"Invalid Item Type: {obj['Type']}", element="Type")
        if obj["Type"] in ("Service", "NonInventory", "Inventory"):
            if not ref_value(obj.get("IncomeAccountRef")):
                raise required("IncomeAccountRef")
            acc = check_ref(realm, "Account", obj["IncomeAccountRef"], "Income account")
            assert acc is not None
            obj["IncomeAccountRef"] = named_ref(acc)
        if "UnitPrice" in obj:
            obj["UnitPrice"] = money(obj["UnitPrice"], "UnitPrice")
        obj.setdefault("Taxable", False)
    elif entity == "Account":
        if not obj.get("AccountType"):
            raise required("AccountType")
        if obj["AccountType"] not in CLASSIFICATION:
            raise QboError("2170", "Invalid Enumeration", f"Invalid AccountType: {obj['AccountType']}")
        obj["Classification"] = CLASSIFICATION[obj["AccountType"]]
        obj.setdefault("SubAccount", "ParentRef" in obj)
        obj.setdefault("CurrentBalance", Decimal(0))
        obj.setdefault("CurrencyRef", dict(USD))
    elif entity == "PaymentMethod":
        obj.setdefault("Type", "NON_CREDIT_CARD")
    elif entity in ("Class", "Department"):
        sub = "SubClass" if entity == "Class" else "SubDepartment"
        obj[sub] = "ParentRef" in obj


# ---------------------------------------------------------------------------------------------------------
# sales forms
# ---------------------------------------------------------------------------------------------------------
def _tax_rate_for(realm: Realm, code: dict[str, Any] | None) -> tuple[Decimal, list[dict[str, Any]]]:
    if not code:
        return Decimal(0), []
    details = code.get("SalesTaxRateList", {}).get("TaxRateDetail", [])
    total = Decimal(0)
    rates = []
    for det in details:
        rate = realm.get("TaxRate", ref_value(det.get("TaxRateRef")) or "")
        if rate:
            total += Decimal(str(rate.get("RateValue", 0)))
            rates.append(rate)
    return total, rates


def validate_sales_lines(realm: Realm, entity: str, obj: dict[str, Any]) -> None:
    """Validate Line[], compute amounts, discount, tax, TotalAmt.

    Raises:
        QboError: 6000 no lines / discount off / class tracking off, 6070 amount mismatch,
        2500 bad ItemRef/ClassRef/TaxCodeRef, 2020 missing Amount, 2170 unknown DetailType.
    """
    lines = [ln for ln in obj.get("Line", []) if ln.get("DetailType") != "SubTotalLineDetail"]
    if not any(ln.get("DetailType") in ("SalesItemLineDetail", "GroupLineDetail", "DescriptionOnly") for ln in lines):
        raise business("You must add at least one line (Line with SalesItemLineDetail) to the transaction.")
    subtotal = Decimal(0)
    taxable = Decimal(0)
    discount_lines: list[dict[str, Any]] = []
    for num, line in enumerate(lines, start=1):
        line["Id"] = str(num)
        line["LineNum"] = num
        dtype = line.get("DetailType")
        line.pop("LinkedTxn", None) if not line.get("LinkedTxn") else None
        line.pop("CustomField", None) if not line.get("CustomField") else None
        if dtype == "SalesItemLineDetail":
            det = line.setdefault("SalesItemLineDetail", {})
            if "Amount" not in line:
                raise required("Line.Amount")
            amount = money(line["Amount"])
            item_id = ref_value(det.get("ItemRef"))
            if item_id is None:
                item = realm.get("Item", "1")  # QBO falls back to the default "Services" item
                assert item is not None
            else:
                item = check_ref(realm, "Item", det["ItemRef"], "Item")
                assert item is not None
            det["ItemRef"] = named_ref(item)
            qty = money(det["Qty"], "Qty") if "Qty" in det else None
            price = money(det["UnitPrice"], "UnitPrice") if "UnitPrice" in det else None
            # python-quickbooks sends Qty=0/UnitPrice=0 for "not set"; QBO only checks a real Qty x UnitPrice.
            if qty is not None and price is not None and not (qty == 0 and price == 0):
                if realm.settings.strict_amount_check and round2(qty * price) != round2(amount):
                    raise QboError(
                        "6070",
                        "Amount calculation incorrect in the request",
                        f"Amount is not equal to UnitPrice * Qty. Supplied value:{amount}",
                        element="Line.Amount",
                    )
            elif qty == 0 and price == 0:
                det.pop("Qty", None)
                det.pop("UnitPrice", None)
            for key, val in (("Qty", qty), ("UnitPrice", price)):
                if val is not None and key in det:
                    det[key] = val
            det.pop("TaxInclusiveAmt", None) if not det.get("TaxInclusiveAmt") else None
            code = ref_value(det.get("TaxCodeRef")) or "NON"
            if realm.get("TaxCode", code) is None:
                raise invalid_ref("TaxCode", code)
            det["TaxCodeRef"] = {"value": code}
            check_class_dept(realm, det, line=True)
            line["Amount"] = round2(amount)
            subtotal += line["Amount"]
            if code != "NON":
                taxable += line["Amount"]
        elif dtype == "DiscountLineDetail":
            if not realm.pref("SalesFormsPrefs", "AllowDiscount"):
                raise business("Discounts are turned off (Preferences.SalesFormsPrefs.AllowDiscount = false)")
            discount_lines.append(line)
        elif dtype == "DescriptionOnly":
            line.setdefault("DescriptionLineDetail", {})
            line["Amount"] = money(line.get("Amount", 0))
        elif dtype == "GroupLineDetail":
            line["Amount"] = money(line.get("Amount", 0))
            subtotal += line["Amount"]
        else:
            raise QboError("2170", "Invalid Enumeration", f"Invalid DetailType: {dtype}", element="Line.DetailType")
    discount = Decimal(0)
    for line in discount_lines:
        det = line.setdefault("DiscountLineDetail", {})
        if det.get("PercentBased"):
            pct = money(det.get("DiscountPercent", 0), "DiscountPercent")
            det["DiscountPercent"] = pct
            line["Amount"] = round2(subtotal * pct / 100)
        else:
            if "Amount" not in line:
                raise required("Line.Amount")
            line["Amount"] = round2(money(line["Amount"]))
            det["PercentBased"] = False
        if ref_value(det.get("DiscountAccountRef")):
            acc = check_ref(realm, "Account", det["DiscountAccountRef"], "Discount account")
            assert acc is not None
            det["DiscountAccountRef"] = named_ref(acc)
        else:
            det["DiscountAccountRef"] = named_ref(realm.get("Account", realm.account_id("DiscountsRefundsGiven")) or {})
        check_class_dept(realm, det, line=True)
        discount += line["Amount"]
    obj["Line"] = lines
    # Tax: QBO computes it for TAX lines from the transaction tax code (or the company's default rate).
    ttd = obj.get("TxnTaxDetail") or {}
    code = None
    if ref_value(ttd.get("TxnTaxCodeRef")):
        code = check_ref(realm, "TaxCode", ttd["TxnTaxCodeRef"], "TaxCode")
    elif taxable:
        code = realm.default_tax_code()
    rate, rates = _tax_rate_for(realm, code)
    base = taxable
    if obj.get("ApplyTaxAfterDiscount") and discount and subtotal:
        base = round2(taxable - discount * taxable / subtotal)
    if "TotalTax" in ttd and ttd.get("TotalTax") not in (None, "", 0) and not ttd.get("TaxLine"):
        tax = round2(money(ttd["TotalTax"], "TotalTax"))  # a supplied TotalTax is honoured (AST behaviour)
    else:
        tax = round2(base * rate / 100)
    new_ttd: dict[str, Any] = {"TotalTax": tax}
    if code:
        new_ttd["TxnTaxCodeRef"] = {"value": code["Id"]}
        new_ttd["TaxLine"] = [
            {
                "Amount": round2(base * Decimal(str(r["RateValue"])) / 100),
                "DetailType": "TaxLineDetail",
                "TaxLineDetail": {
                    "TaxRateRef": {"value": r["Id"]},
                    "PercentBased": True,
                    "TaxPercent": Decimal(str(r["RateValue"])),
                    "NetAmountTaxable": base,
                },
            }
            for r in rates
        ]
    obj["TxnTaxDetail"] = new_ttd
    obj["TotalAmt"] = round2(subtotal - discount + tax)
    obj["HomeTotalAmt"] = obj["TotalAmt"]


def validate_sales_form(realm: Realm, entity: str, obj: dict[str, Any], allow_dup: bool) -> None:
    """Invoice, CreditMemo, SalesReceipt, RefundReceipt.

    Raises:
        QboError: see validate_sales_lines, check_txn_date, check_docnumber, plus 2020/2500 on CustomerRef.
    """
    if entity != "RefundReceipt" or "CustomerRef" in obj:
        if not ref_value(obj.get("CustomerRef")):
            raise required("CustomerRef")
        cust = check_ref(realm, "Customer", obj["CustomerRef"], "Customer")
        assert cust is not None
        obj["CustomerRef"] = {"value": cust["Id"], "name": cust["DisplayName"]}
        if entity == "Invoice" and "BillAddr" not in obj and cust.get("BillAddr"):
            obj["BillAddr"] = copy.deepcopy(cust["BillAddr"])
        if "BillEmail" not in obj and cust.get("PrimaryEmailAddr"):
            obj["BillEmail"] = copy.deepcopy(cust["PrimaryEmailAddr"])
    check_txn_date(realm, obj)
    check_docnumber(realm, entity, obj, allow_dup)
    check_class_dept(realm, obj, line=False)
    validate_sales_lines(realm, entity, obj)
    obj.setdefault("CurrencyRef", dict(USD))
    obj.setdefault("ExchangeRate", 1)
    obj.setdefault("CustomField", [])
    obj.setdefault("ApplyTaxAfterDiscount", False)
    obj.setdefault("PrintStatus", "NotSet")
    obj.setdefault("EmailStatus", "NotSet")
    obj.setdefault("PrivateNote", obj.get("PrivateNote"))
    if obj["EmailStatus"] == "NeedToSend" and not obj.get("BillEmail"):
        raise business("Missing BillEmail: EmailStatus NeedToSend requires a BillEmail address")
    if entity == "Invoice":
        obj.setdefault("LinkedTxn", [])
        obj.setdefault("Deposit", Decimal(0))
        for key in (
            "AllowIPNPayment",
            "AllowOnlinePayment",
            "AllowOnlineCreditCardPayment",
            "AllowOnlineACHPayment",
        ):
            obj.setdefault(key, False)
        if "DueDate" in obj:
            obj["DueDate"] = parse_date(obj["DueDate"], "DueDate").isoformat()
        else:
            days = 0
            term = realm.get("Term", ref_value(obj.get("SalesTermRef")) or "")
            if term:
                days = int(term.get("DueDays", 0))
            obj["DueDate"] = (date.fromisoformat(obj["TxnDate"]) + timedelta(days=days)).isoformat()
        obj["Balance"] = obj["TotalAmt"]
        obj["HomeBalance"] = obj["TotalAmt"]
    elif entity == "CreditMemo":
        obj["RemainingCredit"] = obj["TotalAmt"]
        obj["Balance"] = obj["TotalAmt"]
    else:
        obj["Balance"] = Decimal(0)
        if entity == "RefundReceipt" and not ref_value(obj.get("DepositToAccountRef")):
            raise required("DepositToAccountRef")
        _deposit_account(realm, obj)
        if "PaymentMethodRef" in obj:
            pm = check_ref(realm, "PaymentMethod", obj["PaymentMethodRef"], "PaymentMethod")
            obj["PaymentMethodRef"] = named_ref(pm) if pm else obj.pop("PaymentMethodRef")


def _deposit_account(realm: Realm, obj: dict[str, Any]) -> None:
    """Default DepositToAccountRef to Undeposited Funds. Raises: QboError 2500 for a bad account."""
    if ref_value(obj.get("DepositToAccountRef")):
        acc = check_ref(realm, "Account", obj["DepositToAccountRef"], "Account")
        assert acc is not None
    else:
        acc = realm.get("Account", realm.account_id("UndepositedFunds"))
        assert acc is not None
    obj["DepositToAccountRef"] = named_ref(acc)


# ---------------------------------------------------------------------------------------------------------
# payments and deposits
# ---------------------------------------------------------------------------------------------------------
def applied_to(realm: Realm, txn_type: str, txn_id: str, exclude_payment: str | None = None) -> Decimal:
    """Sum of live payment lines linking to a transaction."""
    total = Decimal(0)
    for pay in realm.objects["Payment"].values():
        if pay["Id"] == exclude_payment:
            continue
        for line in pay.get("Line", []):
            for link in line.get("LinkedTxn", []):
                if link.get("TxnType") == txn_type and str(link.get("TxnId")) == txn_id:
                    total += money(line.get("Amount", 0))
    return total


def _customer_matches(realm: Realm, pay_cust: str, txn_cust: str | None) -> bool:
    if txn_cust == pay_cust:
        return True
    # A parent customer may pay a sub-customer's invoice when the job is billed with its parent.
    cust = realm.get("Customer", txn_cust or "")
    return bool(cust and cust.get("BillWithParent") and ref_value(cust.get("ParentRef")) == pay_cust)


def validate_payment(realm: Realm, obj: dict[str, Any]) -> None:
    """Payment: links to invoices / credit memos of the same customer.

    Raises:
        QboError: 2020 missing CustomerRef/TotalAmt, 2500 bad refs, 610 linked txn missing,
        620 other customer,
        6000 over-application, 6210 closed period.
    """
    if not ref_value(obj.get("CustomerRef")):
        raise required("CustomerRef")
    cust = check_ref(realm, "Customer", obj["CustomerRef"], "Customer")
    assert cust is not None
    obj["CustomerRef"] = {"value": cust["Id"], "name": cust["DisplayName"]}
    if "TotalAmt" not in obj:
        raise required("TotalAmt")
    obj["TotalAmt"] = round2(money(obj["TotalAmt"], "TotalAmt"))
    if obj["TotalAmt"] < 0:
        raise business("Payment TotalAmt cannot be negative")
    check_txn_date(realm, obj)
    _deposit_account(realm, obj)
    if "PaymentMethodRef" in obj:
        pm = check_ref(realm, "PaymentMethod", obj["PaymentMethodRef"], "PaymentMethod")
        if pm:
            obj["PaymentMethodRef"] = named_ref(pm)
    ar = realm.get("Account", realm.account_id("AccountsReceivable"))
    assert ar is not None
    obj.setdefault("ARAccountRef", named_ref(ar))
    obj.setdefault("CurrencyRef", dict(USD))
    obj.setdefault("ExchangeRate", 1)
    obj["ProcessPayment"] = bool(obj.get("ProcessPayment", False))
    if obj["ProcessPayment"]:
        raise business("ProcessPayment=true requires QuickBooks Payments, which this company does not have")
    inv_total = Decimal(0)
    cm_total = Decimal(0)
    lines = []
    for line in obj.get("Line", []):
        amount = round2(money(line.get("Amount", 0)))
        links = line.get("LinkedTxn", [])
        for link in links:
            ttype = link.get("TxnType")
            tid = str(link.get("TxnId", ""))
            if ttype not in ("Invoice", "CreditMemo"):
                raise QboError("2170", "Invalid Enumeration", f"Invalid LinkedTxn TxnType: {ttype}")
            target = realm.get(ttype, tid)
            if target is None:
                raise not_found(ttype, tid)
            if not _customer_matches(realm, cust["Id"], ref_value(target.get("CustomerRef"))):
                raise QboError(
                    "620",
                    "Transaction Linking Error",
                    f"TxnID cannot be linked: {ttype} {tid} belongs to a different customer "
                    f"than the payment (CustomerRef {cust['Id']})",
                )
            open_amt = money(target["TotalAmt"]) - applied_to(realm, ttype, tid, exclude_payment=obj.get("Id"))
            if amount > open_amt:
                what = "balance" if ttype == "Invoice" else "remaining credit"
                raise business(f"The amount applied to {ttype} {tid} ({amount}) exceeds its open {what} ({open_amt})")
            if ttype == "Invoice":
                inv_total += amount
            else:
                cm_total += amount
            link["TxnId"] = tid
        line["Amount"] = amount
        lines.append(line)
    obj["Line"] = lines
    applied = inv_total - cm_total
    if applied > obj["TotalAmt"]:
        raise business(
            f"The payment amount ({obj['TotalAmt']}) is less than the amount applied to invoices ({applied})"
        )
    obj["UnappliedAmt"] = obj["TotalAmt"] - applied


def deposit_of(realm: Realm, payment_id: str, exclude: str | None = None) -> str | None:
    """Id of the live Deposit that contains the payment, if any."""
    for dep in realm.objects["Deposit"].values():
        if dep["Id"] == exclude:
            continue
        for line in dep.get("Line", []):
            for link in line.get("LinkedTxn", []):
                if link.get("TxnType") == "Payment" and str(link.get("TxnId")) == payment_id:
                    return str(dep["Id"])
    return None


def validate_deposit(realm: Realm, obj: dict[str, Any]) -> None:
    """Deposit of undeposited payments (LinkedTxn) or other money (DepositLineDetail).

    Raises:
        QboError: 2020 missing DepositToAccountRef, 2500 bad account, 610 payment missing,
        6000 already deposited.
    """
    if not ref_value(obj.get("DepositToAccountRef")):
        raise required("DepositToAccountRef")
    acc = check_ref(realm, "Account", obj["DepositToAccountRef"], "Account")
    assert acc is not None
    obj["DepositToAccountRef"] = named_ref(acc)
    check_txn_date(realm, obj)
    total = Decimal(0)
    for num, line in enumerate(obj.get("Line", []), start=1):
        line["Id"] = str(num)
        line["LineNum"] = num
        amount = round2(money(line.get("Amount", 0)))
        for link in line.get("LinkedTxn", []):
            pid = str(link.get("TxnId", ""))
            if link.get("TxnType") != "Payment" or realm.get("Payment", pid) is None:
                raise not_found(str(link.get("TxnType")), pid)
            other = deposit_of(realm, pid, exclude=obj.get("Id"))
            if other:
                raise business(f"Payment {pid} is already included in Deposit {other}")
        if "DepositLineDetail" in line:
            det = line["DepositLineDetail"]
            if ref_value(det.get("AccountRef")):
                a = check_ref(realm, "Account", det["AccountRef"], "Account")
                assert a is not None
                det["AccountRef"] = named_ref(a)
            line.setdefault("DetailType", "DepositLineDetail")
        line["Amount"] = amount
        total += amount
    obj["TotalAmt"] = total
    obj["HomeTotalAmt"] = total
    obj.setdefault("CurrencyRef", dict(USD))


def validate(realm: Realm, entity: str, obj: dict[str, Any], allow_dup: bool = False) -> None:
    """Validate and complete `obj` in place for a create or update.

    Raises:
        QboError: the fault QBO would return.
    """
    if entity in ("Customer", "Vendor", "Employee"):
        validate_person(realm, entity, obj)
    elif entity in ("TaxCode", "TaxRate"):
        raise business(f"{entity} cannot be created or changed through the API; use automated sales tax")
    elif entity in NAME_LIST:
        validate_named(realm, entity, obj)
    elif entity in SALES_FORMS:
        validate_sales_form(realm, entity, obj, allow_dup)
    elif entity == "Payment":
        validate_payment(realm, obj)
    elif entity == "Deposit":
        validate_deposit(realm, obj)


def strip_read_only(entity: str, body: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in body.items() if k not in READ_ONLY_COMMON}
    if entity in SALES_FORMS:
        out = {k: v for k, v in out.items() if k not in READ_ONLY_SALES}
    if entity == "Customer":
        out.pop("Balance", None)
    out.pop("sparse", None)
    return out


def present(entity: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Response form of a stored object: QBO appends a SubTotalLineDetail line to sales forms."""
    out = copy.deepcopy(obj)
    if entity in SALES_FORMS and "Line" in out:
        sub = sum(
            (
                money(ln.get("Amount", 0))
                for ln in out["Line"]
                if ln.get("DetailType") in ("SalesItemLineDetail", "GroupLineDetail")
            ),
            Decimal(0),
        )
        out["Line"].append({"Amount": sub, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}})
    return out
