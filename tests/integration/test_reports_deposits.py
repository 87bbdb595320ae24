"""Deposit reconciliation and drift against the QBO emulator: payments synced by the real engine with the
platform's deposit batches, then changed by a QuickBooks user (edited, deleted, one entered by hand)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.domain.reports import Period
from shared.services.reports import ReportService
from tests.sync_harness import SyncHarness

T = "clinic-1"
WEEK = Period(date(2026, 11, 2), date(2026, 11, 6))
_seq = itertools.count(1)


def event(etype: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
    n = next(_seq)
    at = (datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=n)).isoformat()
    return {"id": f"evt-d-{n:06d}", "type": etype, "tenant_id": T, "occurred_at": at, "version": version, "data": data}


def visit(aid: str) -> dict[str, Any]:
    lines = [{"service_code": "97110", "units": 2, "unit_price": "85.00"}]  # 170.00
    return event(
        "appointment.completed",
        2,
        {
            "appointment_id": aid,
            "patient_id": "pat-1",
            "provider_id": "prov-a",
            "location_id": "loc-1",
            "service_date": "2026-11-03",
            "payer_type": "self_pay",
            "lines": lines,
        },
    )


def pay(pid: str, amount: str, aid: str, batch: str | None, kind: str = "patient") -> dict[str, Any]:
    data: dict[str, Any] = {
        "payment_id": pid,
        "patient_id": "pat-1",
        "amount": amount,
        "kind": kind,
        "received_on": "2026-11-03",
        "applies_to": [{"appointment_id": aid, "amount": amount}],
    }
    if batch:
        data["deposit_batch_id"] = batch
    return event("payment.collected", 1, data)


def synced_week(h: SyncHarness) -> dict[str, str]:
    """Two visits (170.00 each); batch B1 = 25.00 + 100.00; one 30.00 payment with no batch. -> QBO ids."""
    h.store(
        [
            event("patient.upserted", 1, {"patient_id": "pat-1", "first_name": "Ada", "last_name": "Lopez"}),
            visit("appt-1"),
            visit("appt-2"),
            pay("copay-1", "25.00", "appt-1", "B1", kind="copay"),
            pay("pay-2", "100.00", "appt-2", "B1"),
            pay("pay-3", "30.00", "appt-2", None),
        ]
    )
    h.drain()
    return {o.object_key: o.qbo["payment"]["id"] for o in h.objects() if o.kind == "payment"}


def report(h: SyncHarness, kind: str) -> dict[str, Any]:
    return ReportService(client_factory=h.service._client_factory).report(kind, T, WEEK, verify=True)


def test_a_batch_matches_its_payments_in_undeposited_funds(harness: SyncHarness) -> None:
    synced_week(harness)
    r = report(harness, "deposits")
    (b1,) = r["batches"]
    assert (b1["platform_total"], b1["qbo_total"], b1["difference"], len(b1["payments"])) == (
        "125.00",
        "125.00",
        "0.00",
        2,
    )
    assert [(i["subject"], i["reason"], i["amount"]) for i in r["issues"]] == [
        ("payment:pay-3", "payment with no deposit batch", "30.00")
    ]
    assert r["qbo_reads"] == 2  # payments of the period + the Undeposited Funds account


def test_quickbooks_side_edits_deletes_and_hand_entered_payments_are_caught(harness: SyncHarness) -> None:
    ids = synced_week(harness)
    customer = harness.control.books(harness.realm_id)["Customer"][0]["Id"]
    pay2 = next(p for p in harness.control.books(harness.realm_id)["Payment"] if p["Id"] == ids["payment:pay-2"])
    link = pay2["Line"][0]["LinkedTxn"]
    harness.control.ui(
        harness.realm_id,
        "Payment",
        "update",
        {"Id": pay2["Id"], "sparse": True, "TotalAmt": 90, "Line": [{"Amount": 90, "LinkedTxn": link}]},
    )
    harness.control.ui(harness.realm_id, "Payment", "delete", {"Id": ids["payment:copay-1"]})
    hand = harness.control.ui(
        harness.realm_id,
        "Payment",
        "create",
        {"CustomerRef": {"value": customer}, "TotalAmt": 40, "TxnDate": "2026-11-04"},
    )
    hand_id = str((hand.get("Payment") or hand)["Id"])
    r = report(harness, "deposits")
    reasons = {(i["subject"], i["reason"]) for i in r["issues"]}
    assert ("B1", f"payment:pay-2: QuickBooks payment {ids['payment:pay-2']} is 90.00, platform 100.00") in reasons
    assert ("B1", "payment:copay-1 (payment) is missing in QuickBooks") in reasons
    assert ("B1", "batch total 125.00 != QuickBooks payments 90.00") in reasons
    assert (f"Payment {hand_id}", "in Undeposited Funds but in no platform batch") in reasons
    drift = {(e["document"].split()[1], e["kind"]) for e in report(harness, "drift")["drift"]}
    assert (ids["payment:copay-1"], "missing_in_qbo") in drift
    assert (ids["payment:pay-2"], "changed") in drift
    assert (hand_id, "in_qbo_only") in drift
