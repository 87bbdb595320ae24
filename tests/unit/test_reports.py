"""Revenue, visit, deposit and drift rules (pure): ledger rows built here, no network."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from shared.domain import reports as rep
from shared.domain.tenant import TenantMappings, TenantSettings

WEEK = rep.Period(date(2026, 11, 2), date(2026, 11, 6))
MAPPINGS = TenantMappings(
    services={"97110": "Therapeutic Exercise", "97140": "Manual Therapy"},
    providers={"prov-a": "Dr. Adams"},
    locations={"loc-1": "Downtown"},
)


# ---------------------------------------------------------------------------------------------- builders
def visit(
    aid: str,
    *,
    inv_id: str,
    day: str = "2026-11-02",
    lifecycle: str = "active",
    payer: str = "insurance",
    lines: list[dict[str, Any]] | None = None,
) -> rep.LedgerRow:
    return rep.LedgerRow(
        object_key=f"appointment:{aid}",
        kind="appointment",
        lifecycle=lifecycle,
        desired={
            "appointment_id": aid,
            "patient_id": "pat-1",
            "provider_id": "prov-a",
            "location_id": "loc-1",
            "service_date": day,
            "payer_type": payer,
            "modality": "in_person",
            "lines": lines
            or [
                {"service_code": "97110", "units": "2", "unit_price": "85.00", "discount_amount": "0"},
                {"service_code": "97140", "units": "1", "unit_price": "78.50", "discount_amount": "10.00"},
            ],
        },  # 170.00 + 78.50 - 10.00 = 238.50
        qbo={
            "invoice": {
                "type": "Invoice",
                "id": inv_id,
                "doc_number": f"QB-{aid}",
                "total": "238.50",
                "state": "voided" if lifecycle == "cancelled" else "active",
            }
        },
    )


def payment(
    pid: str,
    amount: str,
    aid: str | None,
    *,
    kind: str = "copay",
    qbo_id: str = "p1",
    batch: str | None = None,
    day: str = "2026-11-02",
    **extra: Any,
) -> rep.LedgerRow:
    data: dict[str, Any] = {
        "payment_id": pid,
        "patient_id": "pat-1",
        "amount": amount,
        "kind": kind,
        "received_on": day,
        "applies_to": [{"appointment_id": aid, "amount": amount}] if aid else [],
    }
    if batch:
        data["deposit_batch_id"] = batch
    data.update(extra)
    return rep.LedgerRow(
        f"payment:{pid}",
        "payment",
        desired=data,
        qbo={"payment": {"type": "Payment", "id": qbo_id, "total": amount, "state": "active"}},
    )


def remittance(items: list[dict[str, Any]], slots: dict[str, Any]) -> rep.LedgerRow:
    return rep.LedgerRow(
        "remittance:era-1",
        "remittance",
        desired={"remittance_id": "era-1", "received_on": "2026-11-09", "items": items},
        qbo=slots,
    )


def ledger(*rows: rep.LedgerRow, settings: TenantSettings | None = None) -> rep.Ledger:
    return rep.build_ledger(rows, MAPPINGS, settings or TenantSettings())


def settled_visit() -> list[rep.LedgerRow]:
    """238.50 = copay 25.00 + insurer 170.00 + contractual 43.50."""
    return [
        visit("a1", inv_id="10"),
        payment("copay-a1", "25.00", "a1", qbo_id="20"),
        remittance(
            [
                {
                    "appointment_id": "a1",
                    "patient_id": "pat-1",
                    "amount": "170.00",
                    "adjustments": [{"kind": "contractual", "amount": "43.50"}],
                }
            ],
            {
                "payment:pat-1": {"type": "Payment", "id": "21", "total": "170.00"},
                "credit:0.0": {"type": "CreditMemo", "id": "30", "total": "43.50"},
                "apply:0.0": {"type": "Payment", "id": "22", "total": "0"},
            },
        ),
    ]


# ---------------------------------------------------------------------------------------------- revenue
def test_revenue_totals_and_breakdowns_to_the_cent() -> None:
    r = rep.revenue_report(ledger(*settled_visit(), visit("a2", inv_id="11", payer="self_pay")), WEEK).to_json()
    assert r["totals"] == {
        "visits": 2,
        "invoiced": "477.00",
        "collected": "195.00",
        "adjusted": "43.50",
        "written_off": "0.00",
        "outstanding": "238.50",
        "unapplied": "0.00",
        "refunded": "0.00",
    }
    assert r["by"]["payer_type"]["self_pay"]["outstanding"] == "238.50"
    assert r["by"]["category"] == {
        "Manual Therapy": {"invoiced": "137.00"},
        "Therapeutic Exercise": {"invoiced": "340.00"},
    }


def test_visits_outside_the_period_and_cancelled_visits_are_not_revenue() -> None:
    led = ledger(
        visit("a1", inv_id="10"),
        visit("late", inv_id="11", day="2026-11-09"),
        visit("gone", inv_id="12", lifecycle="cancelled"),
    )
    assert rep.revenue_report(led, WEEK).totals.visits == 1


# ---------------------------------------------------------------------------------------------- visits
def test_a_settled_visit_adds_up() -> None:
    r = rep.visit_reconciliation(ledger(*settled_visit()), WEEK)
    (v,) = r["visits"]
    assert (v["charges"], v["copay"], v["insurer_paid"], v["adjustments"], v["balance"]) == (
        "238.50",
        "25.00",
        "170.00",
        "43.50",
        "0.00",
    )
    assert r["issues"] == []


def test_overapplied_money_is_a_negative_balance() -> None:
    r = rep.visit_reconciliation(
        ledger(*settled_visit(), payment("extra", "30.00", "a1", kind="patient", qbo_id="23")), WEEK
    )
    assert r["issues"] == [
        {"subject": "appointment:a1", "reason": "negative balance: more money applied than charged", "amount": "-30.00"}
    ]


def test_money_without_a_visit_and_money_for_a_cancelled_visit_are_listed() -> None:
    led = ledger(
        visit("gone", inv_id="12", lifecycle="cancelled"),
        payment("c1", "25.00", "gone"),
        payment("c2", "40.00", "nobody", qbo_id="p2"),
    )
    reasons = {i.subject: i.reason for i in led.issues}
    assert reasons["payment:c1"] == "money for appointment:gone, which is cancelled: left unapplied"
    assert reasons["payment:c2"] == "money without a visit: appointment:nobody is not known to the ledger"
    assert led.unapplied == Decimal("65.00")


def test_a_qbo_balance_that_differs_from_the_ledgers_money_is_listed() -> None:
    led = ledger(*settled_visit())
    led.visits["appointment:a1"].qbo_balance = Decimal("15.00")
    (issue,) = rep.visit_issues(led.visits["appointment:a1"])
    assert issue.amount == Decimal("15.00") and "QuickBooks balance 15.00" in issue.reason


def test_failed_money_is_listed_as_not_in_quickbooks() -> None:
    row = rep.LedgerRow(
        "payment:p9",
        "payment",
        status="failed",
        status_reason="missing mapping",
        desired={"payment_id": "p9", "patient_id": "pat-1", "amount": "5.00", "received_on": "2026-11-02"},
    )
    (issue,) = ledger(row).issues
    assert issue.reason == "money not in QuickBooks: failed (missing mapping)"


# ---------------------------------------------------------------------------------------------- deposits
def deposits_ledger() -> rep.Ledger:
    return ledger(
        visit("a1", inv_id="10"),
        payment("c1", "25.00", "a1", qbo_id="20", batch="B1"),
        payment("c2", "30.00", "a1", qbo_id="21", batch="B1", kind="patient"),
        payment("c3", "12.00", "a1", qbo_id="22", kind="patient"),
    )


def qbo_pay(qid: str, total: str, account: str | None = None) -> rep.QboPayment:
    return rep.QboPayment(qid, Decimal(total), "2026-11-02", account)


def test_deposit_batch_matches_its_qbo_payments() -> None:
    pays = {"20": qbo_pay("20", "25.00"), "21": qbo_pay("21", "30.00"), "22": qbo_pay("22", "12.00")}
    r = rep.deposit_reconciliation(deposits_ledger(), WEEK, pays, "4")
    (b,) = r["batches"]
    assert (b["batch"], b["platform_total"], b["qbo_total"], b["difference"]) == ("B1", "55.00", "55.00", "0.00")
    assert [i["reason"] for i in r["issues"]] == ["payment with no deposit batch"]


def test_deposit_discrepancies_are_caught() -> None:
    pays = {
        "20": qbo_pay("20", "20.00"),  # edited in QBO
        # 21 deleted in QBO
        "22": qbo_pay("22", "12.00", account="35"),  # deposited to the bank already
        "99": qbo_pay("99", "50.00"),  # entered by a user, in Undeposited Funds
    }
    r = rep.deposit_reconciliation(deposits_ledger(), WEEK, pays, "4")
    reasons = [(i["subject"], i["reason"]) for i in r["issues"]]
    assert ("B1", "payment:c1: QuickBooks payment 20 is 20.00, platform 25.00") in reasons
    assert ("B1", "payment:c2 (payment) is missing in QuickBooks") in reasons
    assert ("B1", "batch total 55.00 != QuickBooks payments 20.00") in reasons
    assert ("payment:c3", "payment with no deposit batch") in reasons
    assert ("Payment 99", "in Undeposited Funds but in no platform batch") in reasons
    assert r["batches"][0]["difference"] == "-35.00"


# ---------------------------------------------------------------------------------------------- verify + drift
def qbo_invoice(inv_id: str, *, first_amount: float = 170, balance: float = 0) -> dict[str, Any]:
    return {
        "Id": inv_id,
        "DocNumber": "QB-a1",
        "TxnDate": "2026-11-02",
        "ClassRef": {"value": "c1"},
        "DepartmentRef": {"value": "d1"},
        "TotalAmt": first_amount + 78.5 - 10,
        "Balance": balance,
        "Line": [
            {
                "DetailType": "SalesItemLineDetail",
                "Amount": first_amount,
                "SalesItemLineDetail": {"ItemRef": {"value": "i1"}},
            },
            {"DetailType": "SalesItemLineDetail", "Amount": 78.5, "SalesItemLineDetail": {"ItemRef": {"value": "i2"}}},
            {"DetailType": "DiscountLineDetail", "Amount": 10},
        ],
    }


def books(invoices: list[dict[str, Any]], payments: list[dict[str, Any]] | None = None) -> rep.QboBooks:
    pays = (
        payments
        if payments is not None
        else [
            {"Id": "20", "TotalAmt": 25, "TxnDate": "2026-11-02"},
            {"Id": "21", "TotalAmt": 170, "TxnDate": "2026-11-09"},
            {"Id": "22", "TotalAmt": 0, "TxnDate": "2026-11-09"},
        ]
    )
    names = {
        "Class": {"c1": "Dr. Adams"},
        "Department": {"d1": "Downtown"},
        "Item": {"i1": "Therapeutic Exercise", "i2": "Manual Therapy"},
    }
    return rep.QboBooks(invoices, pays, [{"Id": "30", "TotalAmt": 43.5, "TxnDate": "2026-11-09"}], names, reads=7)


def check(b: rep.QboBooks) -> rep.Verification:
    led = ledger(*settled_visit())
    return rep.verify(led, rep.revenue_report(led, WEEK), b, MAPPINGS, WEEK)


def test_verify_matches_untouched_books() -> None:
    v = check(books([qbo_invoice("10")]))
    assert v.matches and v.qbo_totals["by_class"] == {"Dr. Adams": "238.50"}


def test_verify_lists_an_edited_line_with_ledger_and_qbo_values() -> None:
    v = check(books([qbo_invoice("10", first_amount=185, balance=15)]))
    got = {(d.field, d.ledger, d.qbo) for d in v.differences if d.document.startswith("Invoice 10")}
    assert got == {
        ("TotalAmt", "238.50", "253.50"),
        ("Balance", "0.00", "15.00"),
        ("Line[Therapeutic Exercise].Amount", "170.00", "185.00"),
    }
    assert ("class Dr. Adams", "invoiced", "238.50", "253.50") in {
        (d.document, d.field, d.ledger, d.qbo) for d in v.differences
    }
    (entry,) = rep.drift_from_differences(v.differences)
    assert entry["kind"] == "changed" and entry["object"] == "appointment:a1"
    assert "qbsync retry appointment:a1" in entry["action"]


def test_verify_finds_deleted_voided_and_qbo_only_documents() -> None:
    voided = {**qbo_invoice("10"), "PrivateNote": "Voided - qbsync:x", "TotalAmt": 0}
    user_invoice = {**qbo_invoice("77"), "DocNumber": "1001"}
    v = check(
        books(
            [voided, user_invoice],
            payments=[
                {"Id": "21", "TotalAmt": 170, "TxnDate": "2026-11-09"},
                {"Id": "22", "TotalAmt": 0, "TxnDate": "2026-11-09"},
            ],
        )
    )
    kinds = {(d.document.split()[0] + " " + d.document.split()[1], d.kind) for d in v.differences if d.kind != "total"}
    assert kinds == {("Invoice 10", "voided_in_qbo"), ("Payment 20", "missing_in_qbo"), ("Invoice 77", "in_qbo_only")}
    actions = {e["kind"]: e["action"] for e in rep.drift_from_differences(v.differences)}
    assert actions["missing_in_qbo"].startswith("deleted in QuickBooks")
    assert actions["in_qbo_only"].startswith("entered in QuickBooks by a user")


def test_cdc_drift_report_entries_get_an_action() -> None:
    stored = {
        "drift": [
            {
                "entity": "Invoice",
                "qbo_id": "10",
                "tenant_id": "t",
                "object_key": "appointment:a1",
                "kind": "changed_in_qbo",
                "ledger": {"total": 238.5},
                "qbo": {"total": 253.5},
            }
        ]
    }
    (e,) = rep.drift_from_cdc(stored)
    assert e["object"] == "appointment:a1" and "qbsync retry appointment:a1" in e["action"]


# ---------------------------------------------------------------------------------------------- chart
def test_chart_is_a_png_and_matplotlib_stays_off_the_import_path(tmp_path: Path) -> None:
    from shared.reports.chart import revenue_chart

    data = rep.revenue_report(ledger(*settled_visit()), WEEK).to_json()
    out = revenue_chart(data, tmp_path / "r.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
    probe = "import sys, shared.services.reports, shared.cli.reports; print('matplotlib' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


# ---------------------------------------------------------------------------------------------- service (fakes, no AWS)
class _Tenants:
    def get(self, tenant_id: str) -> Any:
        from datetime import UTC, datetime

        from shared.domain.tenant import Tenant

        if tenant_id != "t1":
            return None
        return Tenant(
            tenant_id="t1",
            name="PT",
            realm_id="r1",
            signing_secret_id="x",
            mappings=MAPPINGS,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )


def _service(drift: dict[str, Any] | None = None) -> Any:
    from shared.services.reports import ReportService

    return ReportService(rows=lambda _t: settled_visit(), tenants=_Tenants(), drift_store=lambda _r: drift)  # type: ignore[arg-type]


def test_ops_api_entry_validates_its_parameters() -> None:
    import pytest

    from shared.domain.errors import BadRequest, NotFound
    from shared.services.reports import report_for_api

    ok = report_for_api("revenue", {"tenant": "t1", "from": "2026-11-02", "to": "2026-11-06"}, _service())
    assert ok["totals"]["invoiced"] == "238.50"
    with pytest.raises(BadRequest, match="tenant is required"):
        report_for_api("revenue", {"from": "2026-11-02", "to": "2026-11-06"}, _service())
    with pytest.raises(BadRequest, match="YYYY-MM-DD"):
        report_for_api("revenue", {"tenant": "t1", "from": "11/02/2026", "to": "2026-11-06"}, _service())
    with pytest.raises(BadRequest, match="unknown report"):
        report_for_api("profit", {"tenant": "t1", "from": "2026-11-02", "to": "2026-11-06"}, _service())
    with pytest.raises(NotFound):
        report_for_api("visits", {"tenant": "nope", "from": "2026-11-02", "to": "2026-11-06"}, _service())


def test_drift_without_verify_reads_the_cdc_sweeps_stored_report_for_this_tenant() -> None:
    stored = {
        "generated_at": "2026-11-09T00:00:00Z",
        "drift": [
            {
                "entity": "Invoice",
                "qbo_id": "10",
                "tenant_id": "t1",
                "object_key": "appointment:a1",
                "kind": "missing_in_qbo",
                "ledger": {"total": 238.5},
            },
            {"entity": "Invoice", "qbo_id": "99", "tenant_id": "other", "object_key": "appointment:z"},
        ],
    }
    r = _service(stored).drift("t1", WEEK)
    assert r["source"] == "cdc" and [e["object"] for e in r["drift"]] == ["appointment:a1"]
    assert r["drift"][0]["action"].startswith("deleted in QuickBooks")
    assert _service(None).drift("t1", WEEK)["source"] == "none"


def test_every_report_has_a_csv_layout(tmp_path: Path) -> None:
    from shared.cli.reports import write_csv
    from shared.services.reports import csv_rows

    svc = _service({"drift": []})
    for kind in ("revenue", "visits", "deposits", "drift"):
        out = write_csv(csv_rows(kind, svc.report(kind, "t1", WEEK)), tmp_path / f"{kind}.csv")
        assert out.read_text().count("\n") >= 1
    visits_csv = (tmp_path / "visits.csv").read_text().splitlines()
    assert visits_csv[0].startswith("visit,service_date,provider,location,payer_type,modality,invoice_id")
    assert visits_csv[1].startswith("appointment:a1,2026-11-02,prov-a,loc-1,insurance,in_person,10")
