"""QBO v3 behaviour of the emulator through raw HTTP: CRUD, validation faults, balances, query, batch, CDC."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path

from tests.integration.conftest_emulator import Api, api, ctl, emulator_server, fault_code

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "qbo_samples"
__all__ = ["api", "ctl", "emulator_server"]


def keys(obj: object) -> set[str]:
    return set(obj.keys()) if isinstance(obj, dict) else set()


def test_new_realm_has_seed_books(api: Api) -> None:
    accounts = api.ok(api.query("select * from Account maxresults 100"))["QueryResponse"]["Account"]
    subtypes = {a["AccountSubType"] for a in accounts}
    assert {
        "UndepositedFunds",
        "AccountsReceivable",
        "Checking",
        "ServiceFeeIncome",
        "DiscountsRefundsGiven",
    } <= subtypes
    codes = {c["Id"] for c in api.ok(api.query("select * from TaxCode"))["QueryResponse"]["TaxCode"]}
    assert {"TAX", "NON"} <= codes
    methods = {m["Name"] for m in api.ok(api.query("select * from PaymentMethod"))["QueryResponse"]["PaymentMethod"]}
    assert {"Cash", "Check", "Visa"} <= methods
    prefs = api.ok(api.get("preferences"))["Preferences"]
    assert prefs["AccountingInfoPrefs"]["ClassTrackingPerTxn"] is False
    info = api.ok(api.get(f"companyinfo/{api.realm_id}"))["CompanyInfo"]
    assert info["CompanyName"] == "Test Clinic"


def test_every_response_has_intuit_tid(api: Api) -> None:
    assert api.get("customer/424242").headers["intuit_tid"]
    assert api.get("preferences").headers["intuit_tid"]


def test_invoice_read_envelope_matches_real_sample(api: Api) -> None:
    sample = json.loads((SAMPLES / "invoice-read-response-java-sdk-test.json").read_text())
    cust = api.customer(
        "Ada Lopez",
        PrimaryEmailAddr={"Address": "ada@example.com"},
        BillAddr={"Line1": "1 Main St", "City": "Springfield"},
    )
    inv = api.invoice(cust["Id"], 100055.55, DocNumber="4020", PrivateNote="Opening Balance")
    got = api.ok(api.get(f"invoice/{inv['Id']}"))
    assert keys(got) == keys(sample) == {"Invoice", "time"}
    # Fields only present after the invoice is e-mailed or shipped are not expected on a fresh invoice.
    optional = {"DeliveryInfo", "ShipAddr"}
    assert keys(sample["Invoice"]) - optional <= keys(got["Invoice"])
    assert keys(sample["Invoice"]["MetaData"]) == keys(got["Invoice"]["MetaData"])
    assert [ln["DetailType"] for ln in got["Invoice"]["Line"]] == ["SalesItemLineDetail", "SubTotalLineDetail"]
    assert got["Invoice"]["TotalAmt"] == 100055.55 and got["Invoice"]["Balance"] == 100055.55
    assert isinstance(got["Invoice"]["Id"], str) and isinstance(got["Invoice"]["SyncToken"], str)


def test_totals_discount_tax_and_amount_check(ctl, api: Api) -> None:  # type: ignore[no-untyped-def]
    realm = ctl.create_realm("555", sales_tax_rate=8.0)
    tax_api = Api(api.base.split("/v3/")[0], "555", ctl.issue_tokens("555")["access_token"])
    cust = tax_api.customer("Tax Payer")
    body = {
        "CustomerRef": {"value": cust["Id"]},
        "Line": [
            {
                "Amount": 200,
                "DetailType": "SalesItemLineDetail",
                "SalesItemLineDetail": {
                    "ItemRef": {"value": "1"},
                    "Qty": 2,
                    "UnitPrice": 100,
                    "TaxCodeRef": {"value": "TAX"},
                },
            },
            {
                "Amount": 50,
                "DetailType": "SalesItemLineDetail",
                "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "TaxCodeRef": {"value": "NON"}},
            },
            {"DetailType": "DiscountLineDetail", "DiscountLineDetail": {"PercentBased": True, "DiscountPercent": 10}},
        ],
    }
    inv = tax_api.create("Invoice", body)
    assert realm["realm_id"] == "555"
    assert inv["TxnTaxDetail"]["TotalTax"] == 16  # 8% of the TAX line only
    assert inv["TotalAmt"] == 250 - 25 + 16
    body["Line"][0]["Amount"] = 199
    resp = tax_api.post("invoice", body)
    assert resp.status_code == 400 and fault_code(resp) == "6070"


def test_sparse_full_update_and_stale_synctoken(api: Api) -> None:
    cust = api.customer("Bo Chen", GivenName="Bo", FamilyName="Chen", Notes="vip")
    upd = api.create("Customer", {"Id": cust["Id"], "SyncToken": cust["SyncToken"], "sparse": True, "Notes": "x"})
    assert upd["SyncToken"] == "1" and upd["GivenName"] == "Bo" and upd["Notes"] == "x"
    full = api.create("Customer", {"Id": cust["Id"], "SyncToken": "1", "DisplayName": "Bo Chen"})
    assert "GivenName" not in full and full["SyncToken"] == "2"  # full update clears omitted fields
    stale = api.post("customer", {"Id": cust["Id"], "SyncToken": "0", "sparse": True, "Notes": "y"})
    assert stale.status_code == 400 and fault_code(stale) == "5010"
    assert stale.json()["Fault"]["type"] == "ValidationFault"
    assert full["MetaData"]["CreateTime"] == cust["MetaData"]["CreateTime"]


def test_display_name_unique_inactive_blocks_and_no_delete(ctl, api: Api) -> None:  # type: ignore[no-untyped-def]
    cust = api.customer("Cy Dee")
    dup = api.post("customer", {"DisplayName": "Cy Dee"})
    assert dup.status_code == 400 and fault_code(dup) == "6240"
    vendor_clash = api.post("vendor", {"DisplayName": "cy dee"})
    assert fault_code(vendor_clash) == "6240"
    gone = api.post("customer", {"Id": cust["Id"], "SyncToken": "0"}, operation="delete")
    assert fault_code(gone) == "6000"
    api.create("Customer", {"Id": cust["Id"], "SyncToken": "0", "sparse": True, "Active": False})
    assert fault_code(api.post("customer", {"DisplayName": "Cy Dee"})) == "6240"  # inactive still blocks
    assert "Customer" not in api.ok(api.query("select * from Customer"))["QueryResponse"]
    inactive = api.ok(api.query("select * from Customer where Active = false"))["QueryResponse"]["Customer"]
    assert [c["Id"] for c in inactive] == [cust["Id"]]
    ctl.set_settings(inactive_names_block=False)
    assert api.post("customer", {"DisplayName": "Cy Dee"}).status_code == 200


def test_sub_customer(api: Api) -> None:
    parent = api.customer("Ada Parent")
    child = api.customer("Leo Child", Job=True, ParentRef={"value": parent["Id"]}, BillWithParent=True)
    assert child["Level"] == 1 and child["FullyQualifiedName"] == "Ada Parent:Leo Child"
    inv = api.invoice(child["Id"], 40)
    pay = api.create(
        "Payment",
        {
            "CustomerRef": {"value": parent["Id"]},
            "TotalAmt": 40,
            "Line": [{"Amount": 40, "LinkedTxn": [{"TxnId": inv["Id"], "TxnType": "Invoice"}]}],
        },
    )
    assert pay["UnappliedAmt"] == 0
    bad = api.post("customer", {"DisplayName": "Orphan", "ParentRef": {"value": "9999"}})
    assert fault_code(bad) == "2500"


def test_reference_and_preference_faults(ctl, api: Api) -> None:  # type: ignore[no-untyped-def]
    cust = api.customer("Ref Tester")
    base = {
        "CustomerRef": {"value": cust["Id"]},
        "Line": [
            {"Amount": 10, "DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"ItemRef": {"value": "1"}}}
        ],
    }
    assert fault_code(api.post("invoice", dict(base, CustomerRef={"value": "777"}))) == "2500"
    bad_item = json.loads(json.dumps(base))
    bad_item["Line"][0]["SalesItemLineDetail"]["ItemRef"] = {"value": "777"}
    assert fault_code(api.post("invoice", bad_item)) == "2500"
    with_class = dict(base, ClassRef={"value": "1"})
    resp = api.post("invoice", with_class)
    assert fault_code(resp) == "6000" and "class tracking" in resp.json()["Fault"]["Error"][0]["Detail"]
    assert fault_code(api.post("invoice", dict(base, DepartmentRef={"value": "1"}))) == "6000"
    ctl.set_preferences(
        api.realm_id,
        {"AccountingInfoPrefs": {"ClassTrackingPerTxn": True, "TrackDepartments": True, "BookCloseDate": "2024-12-31"}},
    )
    assert fault_code(api.post("invoice", with_class)) == "2500"  # tracking on, class 1 does not exist
    cls = api.create("Class", {"Name": "Clinic A"})
    ok = api.create("Invoice", dict(base, ClassRef={"value": cls["Id"]}, TxnDate="2025-01-01"))
    assert ok["ClassRef"]["value"] == cls["Id"]
    closed = api.post("invoice", dict(base, TxnDate="2024-12-31"))
    assert closed.status_code == 400 and fault_code(closed) == "6210"


def test_docnumber_duplicates_and_custom_numbers(ctl, api: Api) -> None:  # type: ignore[no-untyped-def]
    cust = api.customer("Doc Num")
    first = api.invoice(cust["Id"], DocNumber="BK-1")
    dup = api.post("invoice", {"CustomerRef": {"value": cust["Id"]}, "DocNumber": "BK-1", "Line": first["Line"][:1]})
    assert fault_code(dup) == "6140"
    again = api.post(
        "invoice",
        {"CustomerRef": {"value": cust["Id"]}, "DocNumber": "BK-1", "Line": first["Line"][:1]},
        include="allowduplicatedocnum",
    )
    assert again.status_code == 200
    assert api.invoice(cust["Id"])["DocNumber"]  # auto-numbered
    ctl.set_preferences(api.realm_id, {"SalesFormsPrefs": {"CustomTxnNumbers": True}})
    assert "DocNumber" not in api.invoice(cust["Id"])


def test_payments_credit_memos_and_balances(api: Api) -> None:
    cust = api.customer("Pay Er")
    inv = api.invoice(cust["Id"], 100)
    pay = api.create(
        "Payment",
        {
            "CustomerRef": {"value": cust["Id"]},
            "TotalAmt": 70,
            "Line": [{"Amount": 60, "LinkedTxn": [{"TxnId": inv["Id"], "TxnType": "Invoice"}]}],
        },
    )
    assert pay["UnappliedAmt"] == 10
    inv_now = api.ok(api.get(f"invoice/{inv['Id']}"))["Invoice"]
    assert inv_now["Balance"] == 40 and inv_now["LinkedTxn"] == [{"TxnId": pay["Id"], "TxnType": "Payment"}]
    assert inv_now["SyncToken"] == "1"
    cm = api.create("CreditMemo", {"CustomerRef": {"value": cust["Id"]}, "Line": inv["Line"][:1]})
    assert cm["RemainingCredit"] == 100
    # Credit applied to an invoice through a zero-amount payment.
    inv2 = api.invoice(cust["Id"], 30)
    api.create(
        "Payment",
        {
            "CustomerRef": {"value": cust["Id"]},
            "TotalAmt": 0,
            "Line": [
                {"Amount": 30, "LinkedTxn": [{"TxnId": inv2["Id"], "TxnType": "Invoice"}]},
                {"Amount": 30, "LinkedTxn": [{"TxnId": cm["Id"], "TxnType": "CreditMemo"}]},
            ],
        },
    )
    assert api.ok(api.get(f"invoice/{inv2['Id']}"))["Invoice"]["Balance"] == 0
    assert api.ok(api.get(f"creditmemo/{cm['Id']}"))["CreditMemo"]["RemainingCredit"] == 70
    cust_now = api.ok(api.get(f"customer/{cust['Id']}"))["Customer"]
    assert cust_now["Balance"] == 40 - 10 - 70
    other = api.customer("Some One Else")
    wrong = api.post(
        "payment",
        {
            "CustomerRef": {"value": other["Id"]},
            "TotalAmt": 5,
            "Line": [{"Amount": 5, "LinkedTxn": [{"TxnId": inv["Id"], "TxnType": "Invoice"}]}],
        },
    )
    assert fault_code(wrong) == "620"
    missing = api.post(
        "payment",
        {
            "CustomerRef": {"value": cust["Id"]},
            "TotalAmt": 5,
            "Line": [{"Amount": 5, "LinkedTxn": [{"TxnId": "99999", "TxnType": "Invoice"}]}],
        },
    )
    assert fault_code(missing) == "610"
    # Deleting an invoice with payments applied is refused.
    inv_fresh = api.ok(api.get(f"invoice/{inv['Id']}"))["Invoice"]
    blocked = api.post("invoice", {"Id": inv["Id"], "SyncToken": inv_fresh["SyncToken"]}, operation="delete")
    assert fault_code(blocked) == "6000"


def test_void_and_delete_rules(api: Api) -> None:
    cust = api.customer("Void Er")
    inv = api.invoice(cust["Id"], 80, PrivateNote="booking 1")
    voided = api.create("Invoice", {"Id": inv["Id"], "SyncToken": inv["SyncToken"]}, operation="void")
    assert voided["TotalAmt"] == 0 and voided["Balance"] == 0 and voided["PrivateNote"].startswith("Voided")
    pay = api.create("Payment", {"CustomerRef": {"value": cust["Id"]}, "TotalAmt": 25})
    wrong_route = api.post("payment", {"Id": pay["Id"], "SyncToken": "0"}, operation="void")
    assert fault_code(wrong_route) == "6000"
    pv = api.create("Payment", {"Id": pay["Id"], "SyncToken": "0", "sparse": True}, operation="update", include="void")
    assert pv["TotalAmt"] == 0
    cm = api.create("CreditMemo", {"CustomerRef": {"value": cust["Id"]}, "Line": inv["Line"][:1]})
    assert fault_code(api.post("creditmemo", {"Id": cm["Id"], "SyncToken": "0"}, operation="void")) == "6000"
    deleted = api.ok(api.post("creditmemo", {"Id": cm["Id"], "SyncToken": "0"}, operation="delete"))
    assert deleted["CreditMemo"] == {"status": "Deleted", "domain": "QBO", "Id": cm["Id"]}
    assert fault_code(api.get(f"creditmemo/{cm['Id']}")) == "610"


def test_deposited_payment_cannot_change(api: Api) -> None:
    cust = api.customer("Dep Ositor")
    pay = api.create("Payment", {"CustomerRef": {"value": cust["Id"]}, "TotalAmt": 50})
    checking = api.ok(api.query("select * from Account where AccountType = 'Bank'"))["QueryResponse"]["Account"][0]
    dep = api.create(
        "Deposit",
        {
            "DepositToAccountRef": {"value": checking["Id"]},
            "Line": [{"Amount": 50, "LinkedTxn": [{"TxnId": pay["Id"], "TxnType": "Payment", "TxnLineId": "0"}]}],
        },
    )
    assert dep["TotalAmt"] == 50
    for params in ({"operation": "delete"}, {"operation": "update", "include": "void"}, {}):
        resp = api.post("payment", {"Id": pay["Id"], "SyncToken": "0", "sparse": True, "PrivateNote": "x"}, **params)
        assert fault_code(resp) == "6540", params
    api.ok(api.post("deposit", {"Id": dep["Id"], "SyncToken": "0"}, operation="delete"))
    assert api.post("payment", {"Id": pay["Id"], "SyncToken": "0"}, operation="delete").status_code == 200


def test_query_language(api: Api) -> None:
    for name in ["Ann O'Neil", "Bob Stone", "Cat Stone", "Dan Wu"]:
        api.customer(name)
    q = api.ok(api.get("query", query="select * from Customer where DisplayName = 'Ann O\\'Neil'"))
    assert [c["DisplayName"] for c in q["QueryResponse"]["Customer"]] == ["Ann O'Neil"]
    like = api.ok(api.query("SELECT * FROM Customer WHERE DisplayName LIKE '%Stone' ORDERBY DisplayName DESC"))
    assert [c["DisplayName"] for c in like["QueryResponse"]["Customer"]] == ["Cat Stone", "Bob Stone"]
    page = api.ok(api.query("select * from Customer orderby DisplayName startposition 2 maxresults 2"))
    assert [c["DisplayName"] for c in page["QueryResponse"]["Customer"]] == ["Bob Stone", "Cat Stone"]
    assert page["QueryResponse"]["startPosition"] == 2 and page["QueryResponse"]["maxResults"] == 2
    ids = [c["Id"] for c in like["QueryResponse"]["Customer"]]
    inq = api.ok(api.query(f"select * from Customer where Id in ('{ids[0]}', '{ids[1]}')"))
    assert len(inq["QueryResponse"]["Customer"]) == 2
    count = api.ok(api.query("select count(*) from Customer where DisplayName like '%Stone%'"))
    assert count["QueryResponse"] == {"totalCount": 2}
    recent = api.ok(api.query("select * from Customer where MetaData.LastUpdatedTime >= '2000-01-01T00:00:00-08:00'"))
    assert len(recent["QueryResponse"]["Customer"]) == 4
    inv = api.invoice(ids[0], 10)
    by_ref = api.ok(api.query(f"select * from Invoice where CustomerRef = '{ids[0]}' and Balance > '5'"))
    assert [i["Id"] for i in by_ref["QueryResponse"]["Invoice"]] == [inv["Id"]]
    empty = api.ok(api.query("select * from Invoice where DocNumber = 'nope'"))
    assert empty["QueryResponse"] == {}
    for bad in [
        "select * from Customer where DisplayName = 'O'Neil'",
        "select * from Nope",
        "select * from Customer where A = '1' or B = '2'",
        "select * from Customer maxresults 1001",
    ]:
        resp = api.query(bad)
        assert resp.status_code == 400 and fault_code(resp) == "4000", bad


def test_batch_envelope_matches_sample_and_isolation(api: Api) -> None:
    sample = json.loads((SAMPLES / "batch-response-with-fault-python-quickbooks-test.json").read_text())
    api.customer("Existing Name")
    body = {
        "BatchItemRequest": [
            {"bId": "2", "operation": "create", "Customer": {"DisplayName": "Brand New"}},
            {"bId": "1", "operation": "create", "Customer": {"DisplayName": "Existing Name"}},
            {"bId": "q", "Query": "select * from Customer where DisplayName = 'Existing Name'"},
        ]
    }
    got = api.ok(api.post("batch", body))
    assert keys(got) == keys(sample)
    by_bid = {item["bId"]: item for item in got["BatchItemResponse"]}
    ok_sample, fault_sample = sample["BatchItemResponse"]
    assert keys(by_bid["2"]) == keys(ok_sample)
    assert keys(by_bid["1"]) == keys(fault_sample)
    assert keys(by_bid["1"]["Fault"]) == keys(fault_sample["Fault"])
    assert keys(by_bid["1"]["Fault"]["Error"][0]) == keys(fault_sample["Fault"]["Error"][0])
    assert by_bid["1"]["Fault"]["Error"][0]["code"] == "6240"
    assert len(by_bid["q"]["QueryResponse"]["Customer"]) == 1
    # An item cannot see an object created earlier in the same batch.
    new_id = str(int(by_bid["2"]["Customer"]["Id"]) + 1)  # the failed item used no id
    chained = api.ok(
        api.post(
            "batch",
            {
                "BatchItemRequest": [
                    {"bId": "c", "operation": "create", "Customer": {"DisplayName": "Chain Parent"}},
                    {
                        "bId": "i",
                        "operation": "create",
                        "Invoice": {
                            "CustomerRef": {"value": new_id},
                            "Line": [
                                {
                                    "Amount": 5,
                                    "DetailType": "SalesItemLineDetail",
                                    "SalesItemLineDetail": {"ItemRef": {"value": "1"}},
                                }
                            ],
                        },
                    },
                ]
            },
        )
    )
    items = {i["bId"]: i for i in chained["BatchItemResponse"]}
    assert items["c"]["Customer"]["Id"] == new_id
    assert items["i"]["Fault"]["Error"][0]["code"] == "2500"
    too_many = api.post(
        "batch", {"BatchItemRequest": [{"bId": str(n), "Query": "select * from Item"} for n in range(31)]}
    )
    assert too_many.status_code == 400


def test_batch_void_delete_and_allowduplicatedocnum(api: Api) -> None:
    cust = api.customer("Batch Voider")
    inv = api.invoice(cust["Id"], 10, DocNumber="B-1")
    pay = api.create("Payment", {"CustomerRef": {"value": cust["Id"]}, "TotalAmt": 5})
    got = api.ok(
        api.post(
            "batch",
            {
                "BatchItemRequest": [
                    {
                        "bId": "v",
                        "operation": "update",
                        "optionsData": "void",
                        "Invoice": {"Id": inv["Id"], "SyncToken": "0"},
                    },
                    {"bId": "d", "operation": "delete", "Payment": {"Id": pay["Id"], "SyncToken": "0"}},
                    {
                        "bId": "n",
                        "operation": "create",
                        "optionsData": "allowduplicatedocnum",
                        "Invoice": {"CustomerRef": {"value": cust["Id"]}, "DocNumber": "B-1", "Line": inv["Line"][:1]},
                    },
                ]
            },
        )
    )
    items = {i["bId"]: i for i in got["BatchItemResponse"]}
    assert items["v"]["Invoice"]["TotalAmt"] == 0
    assert items["d"]["Payment"]["status"] == "Deleted"
    assert items["n"]["Invoice"]["DocNumber"] == "B-1"


def test_cdc_envelope_matches_sample(ctl, api: Api) -> None:  # type: ignore[no-untyped-def]
    sample = json.loads((SAMPLES / "cdc-response-java-sdk-test.json").read_text())
    start = "2000-01-01T00:00:00-08:00"
    ctl.set_settings(cdc_lookback_days=100000)
    cust = api.customer("Cdc Person")
    inv = api.invoice(cust["Id"], 12)
    api.ok(api.post("invoice", {"Id": inv["Id"], "SyncToken": "0"}, operation="delete"))
    got = api.ok(api.get("cdc", entities="Customer,Invoice", changedSince=start))
    assert keys(got) == keys(sample)
    assert keys(got["CDCResponse"][0]) == keys(sample["CDCResponse"][0])
    groups = got["CDCResponse"][0]["QueryResponse"]
    assert keys(groups[0]) == {"Customer", "startPosition", "maxResults"}
    assert groups[1]["Invoice"] == [
        {"Id": inv["Id"], "status": "Deleted", "domain": "QBO", "MetaData": groups[1]["Invoice"][0]["MetaData"]}
    ]
    assert keys(groups[1]["Invoice"][0]["MetaData"]) == {"LastUpdatedTime"}
    ctl.set_settings(cdc_lookback_days=30, cdc_max_objects=1)
    old = api.get("cdc", entities="Customer", changedSince="2000-01-01")
    assert old.status_code == 400
    from datetime import datetime, timedelta

    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    capped = api.ok(api.get("cdc", entities="Customer,Invoice", changedSince=since))
    total = sum(
        len(g.get("Customer", [])) + len(g.get("Invoice", [])) for g in capped["CDCResponse"][0]["QueryResponse"]
    )
    assert total == 1


def test_ui_changes_and_books(ctl, api: Api) -> None:  # type: ignore[no-untyped-def]
    cust = api.customer("Ui Person")
    ctl.ui(api.realm_id, "Customer", "update", {"Id": cust["Id"], "Notes": "edited in QBO"})
    assert api.ok(api.get(f"customer/{cust['Id']}"))["Customer"]["Notes"] == "edited in QBO"
    inv = api.invoice(cust["Id"], 9)
    cm = api.create("CreditMemo", {"CustomerRef": {"value": cust["Id"]}, "Line": inv["Line"][:1]})
    ctl.ui(api.realm_id, "CreditMemo", "void", {"Id": cm["Id"]})  # UI users may void credit memos
    ctl.ui(api.realm_id, "Invoice", "delete", {"Id": inv["Id"]})
    books = ctl.books(api.realm_id)
    assert "Invoice" not in books and books["CreditMemo"][0]["TotalAmt"] == 0
    assert ctl.books(api.realm_id, include_deleted=True)["Deleted"][0]["Id"] == inv["Id"]
    ops = [(e["entity"], e["operation"]) for e in ctl.webhook_events()]
    assert ("Customer", "Update") in ops and ("CreditMemo", "Void") in ops and ("Invoice", "Delete") in ops
