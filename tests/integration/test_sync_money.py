"""Sync engine against the QBO emulator: payments, remittances, credits, refunds, edits, voids and deletes."""

from __future__ import annotations

import itertools
import json
import random
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from infra.demo.scenario import pt_week
from infra.qbo_emulator.control import EmulatorControl
from shared.services.sweeps import retry_sweep
from tests.sync_harness import DELIVERY_ORDERS, SyncHarness, delivered, money, stream_delivers

T = "clinic-1"
LINES = [
    {"service_code": "97110", "units": 2, "unit_price": "85.00"},
    {"service_code": "97140", "units": 1, "unit_price": "78.50"},
]  # 248.50
VISIT_TOTAL = Decimal("248.50")


# ---------------------------------------------------------------------------------------------- builders
_seq = itertools.count(1)


def event(etype: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
    n = next(_seq)
    return {
        "id": f"evt-m-{n:06d}",
        "type": etype,
        "tenant_id": T,
        "occurred_at": (datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=n)).isoformat(),
        "version": version,
        "data": data,
    }


def patient(pid: str = "pat-1") -> dict[str, Any]:
    return event("patient.upserted", 1, {"patient_id": pid, "first_name": "Ada", "last_name": "Lopez"})


def appointment(
    etype: str, version: int, aid: str = "appt-1", pid: str = "pat-1", lines: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    data = {
        "appointment_id": aid,
        "patient_id": pid,
        "provider_id": "prov-a",
        "location_id": "loc-1",
        "service_date": "2026-11-02",
        "payer_type": "insurance",
        "lines": lines if lines is not None else LINES,
    }
    return event(etype, version, data)


def payment(
    pay_id: str,
    amount: str,
    aid: str | None = "appt-1",
    *,
    kind: str = "copay",
    etype: str = "payment.collected",
    version: int = 1,
    pid: str = "pat-1",
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "payment_id": pay_id,
        "patient_id": pid,
        "amount": amount,
        "kind": kind,
        "received_on": "2026-11-02",
        "applies_to": [{"appointment_id": aid, "amount": amount}] if aid else [],
        **extra,
    }
    return event(etype, version, data)


def remittance(items: list[dict[str, Any]], rid: str = "era-1") -> dict[str, Any]:
    return event(
        "insurance.remittance",
        1,
        {"remittance_id": rid, "received_on": "2026-11-09", "reference": "ERA-77", "items": items},
    )


def rem_item(aid: str, paid: str, adj: str | None, pid: str = "pat-1", kind: str = "contractual") -> dict[str, Any]:
    item: dict[str, Any] = {"appointment_id": aid, "patient_id": pid, "amount": paid}
    if adj:
        item["adjustments"] = [{"kind": kind, "amount": adj}]
    return item


def books(h: SyncHarness, entity: str) -> list[dict[str, Any]]:
    return list(h.control.books(h.realm_id).get(entity, []))


def invoice(h: SyncHarness) -> dict[str, Any]:
    (inv,) = books(h, "Invoice")
    return inv


def settle(h: SyncHarness) -> None:
    """Drain, then run the retry sweep an hour later until nothing is dirty (retrying objects come back)."""
    later = datetime.now(UTC) + timedelta(hours=1)
    for _ in range(20):
        h.drain()
        if not any(retry_sweep(now=later).values()):
            return
    raise AssertionError("objects kept retrying")


def visit_events() -> list[dict[str, Any]]:
    """Copay at booking → completion → remittance with a contractual adjustment: 25 + 178.80 + 44.70 = 248.50."""
    return [
        payment("copay-1", "25.00"),
        appointment("appointment.completed", 2),
        remittance([rem_item("appt-1", "178.80", "44.70")]),
    ]


def assert_visit_settled(h: SyncHarness) -> None:
    inv = invoice(h)
    assert money(inv["TotalAmt"]) == VISIT_TOTAL and money(inv["Balance"]) == 0
    payments = books(h, "Payment")
    assert sorted(money(p["TotalAmt"]) for p in payments) == [Decimal(0), Decimal("25.00"), Decimal("178.80")]
    (memo,) = books(h, "CreditMemo")
    assert money(memo["TotalAmt"]) == Decimal("44.70") and money(memo["RemainingCredit"]) == 0
    assert memo["DocNumber"].startswith("CR-")
    assert len(books(h, "Customer")) == 1
    assert {o.status for o in h.objects()} == {"synced"}


# ---------------------------------------------------------------------------------------------- the visit
ORDERS = list(itertools.permutations(range(4)))


@pytest.mark.parametrize("order", ORDERS, ids=["".join(map(str, o)) for o in ORDERS])
def test_copay_completion_remittance_settle_the_visit_in_every_delivery_order(
    harness: SyncHarness, order: tuple[int, ...]
) -> None:
    evs = [patient(), *visit_events()]
    for i in order:
        harness.store([evs[i]])
        harness.drain()
    assert_visit_settled(harness)


def test_duplicated_and_shuffled_money_events_change_nothing(harness: SyncHarness) -> None:
    evs = [patient(), appointment("appointment.booked", 1), *visit_events()]
    doubled = [e for e in evs for _ in (0, 1)]
    random.Random(4).shuffle(doubled)
    harness.store(doubled)
    harness.drain(shuffle=random.Random(2))
    harness.store(evs)  # redelivered later
    harness.drain()
    assert_visit_settled(harness)


def test_copay_posts_unapplied_before_the_invoice_then_links(harness: SyncHarness) -> None:
    harness.store([patient(), appointment("appointment.booked", 1), payment("copay-1", "25.00")])
    harness.drain()
    (pay,) = books(harness, "Payment")
    assert pay["Line"] == [] and money(pay["UnappliedAmt"]) == Decimal("25.00")
    harness.store([appointment("appointment.completed", 2)])
    harness.drain()
    (pay,) = books(harness, "Payment")
    assert money(pay["UnappliedAmt"]) == 0 and pay["Line"][0]["LinkedTxn"][0]["TxnId"] == invoice(harness)["Id"]
    assert money(invoice(harness)["Balance"]) == VISIT_TOTAL - Decimal("25.00")


def test_hold_policy_waits_for_the_appointment_and_is_woken_by_it(harness: SyncHarness) -> None:
    harness.put_tenant(
        mappings={"services": {"97110": "Therapeutic Exercise", "97140": "Manual Therapy"}},
        settings={"unapplied_copay_policy": "hold"},
    )
    harness.store([patient(), appointment("appointment.booked", 1), payment("copay-1", "25.00")])
    harness.drain()
    (waiting,) = harness.objects("waiting")
    assert waiting.object_key == "payment:copay-1" and waiting.waiting_on == "appointment:appt-1"
    assert books(harness, "Payment") == []
    harness.store([appointment("appointment.completed", 2)])
    harness.drain()
    (pay,) = books(harness, "Payment")
    assert pay["Line"][0]["LinkedTxn"][0]["TxnId"] == invoice(harness)["Id"]
    assert {o.status for o in harness.objects()} == {"synced"}


@pytest.mark.parametrize("follow", [True, False], ids=["taken-next", "touched"])
def test_the_worker_that_syncs_the_visit_takes_the_waiting_copay_next(harness: SyncHarness, follow: bool) -> None:
    """With ``follow`` allowing it, the copay that waited on the visit is reconciled by the same worker right after
    the invoice (no trip through the stream); otherwise it is only woken, and the stream would bring it."""
    harness.put_tenant(
        mappings={"services": {"97110": "Therapeutic Exercise", "97140": "Manual Therapy"}},
        settings={"unapplied_copay_policy": "hold"},
    )
    harness.store([patient(), appointment("appointment.booked", 1), payment("copay-1", "25.00")])
    harness.drain()
    harness.store([appointment("appointment.completed", 2)])
    reads: list[str] = []
    real_get = harness.service.objects.get
    harness.service.objects.get = lambda tenant_id, key: reads.append(key) or real_get(tenant_id, key)  # type: ignore[method-assign]
    with harness.workers.worker(harness.realm_id):
        outcome = harness.service.reconcile(T, "appointment:appt-1", follow=lambda: follow)
    assert outcome is not None and outcome.status == "synced"
    (copay,) = [o for o in harness.objects() if o.object_key == "payment:copay-1"]
    if follow:
        assert copay.status == "synced" and not copay.dirty and copay.lease_until is None
        # The copay used what the visit's reconcile knew: the visit as it finished it, and the patient it read.
        assert reads == ["patient:pat-1"]
        (pay,) = books(harness, "Payment")
        assert pay["Line"][0]["LinkedTxn"][0]["TxnId"] == invoice(harness)["Id"]
        assert not any(stream_delivers(o) for o in harness.objects())
    else:
        assert copay.status == "waiting" and stream_delivers(copay) and books(harness, "Payment") == []
        harness.drain()
        assert len(books(harness, "Payment")) == 1


def test_remittance_for_two_patients_makes_one_payment_each(harness: SyncHarness) -> None:
    harness.store(
        [
            patient("pat-1"),
            patient("pat-2"),
            appointment("appointment.completed", 2, "appt-1", "pat-1"),
            appointment("appointment.completed", 2, "appt-2", "pat-2"),
            appointment("appointment.completed", 2, "appt-3", "pat-1"),
            remittance(
                [
                    rem_item("appt-1", "200.00", "48.50", "pat-1"),
                    rem_item("appt-2", "198.50", "50.00", "pat-2", kind="write_off"),
                    rem_item("appt-3", "248.50", None, "pat-1"),
                ]
            ),
        ]
    )
    harness.drain()
    assert all(money(i["Balance"]) == 0 for i in harness.invoices())
    money_in = sorted(money(p["TotalAmt"]) for p in books(harness, "Payment") if money(p["TotalAmt"]) > 0)
    assert money_in == [Decimal("198.50"), Decimal("448.50")]
    prefixes = sorted(m["DocNumber"][:3] for m in books(harness, "CreditMemo"))
    assert prefixes == ["CR-", "WO-"]


# ---------------------------------------------------------------------------------------------- payment details
def test_method_reference_and_deposit_account_are_mapped(harness: SyncHarness) -> None:
    bank = next(a for a in books(harness, "Account") if a.get("AccountType") == "Bank")
    harness.put_tenant(
        mappings={
            "services": {"97110": "Therapeutic Exercise", "97140": "Manual Therapy"},
            "payment_methods": {"card": "Visa"},
            "deposit_account": bank["Name"],
        }
    )
    harness.store(
        [
            patient(),
            appointment("appointment.completed", 2),
            payment("copay-1", "25.00", method="card", reference="ch_" + "x" * 30),
        ]
    )
    harness.drain()
    (pay,) = books(harness, "Payment")
    assert pay["PaymentMethodRef"]["name"] == "Visa"
    assert pay["PaymentRefNum"] == ("ch_" + "x" * 30)[:21]
    assert pay["DepositToAccountRef"]["value"] == bank["Id"]


def test_unmapped_payment_method_is_a_failure_with_the_fix(harness: SyncHarness) -> None:
    harness.put_tenant(mappings={"services": {"97110": "Therapeutic Exercise"}, "payment_methods": {"card": "Visa"}})
    harness.store([patient(), payment("pay-1", "40.00", None, kind="patient", method="crypto")])
    harness.drain()
    (failed,) = harness.objects("failed")
    assert "qbsync mappings set payment_methods crypto" in failed.last_error["suggested_fix"]


# ---------------------------------------------------------------------------------------------- refunds
def test_refund_becomes_a_refund_receipt(harness: SyncHarness) -> None:
    pay = payment("pay-1", "258.50", kind="patient", method="check")
    pay["data"]["applies_to"][0]["amount"] = "248.50"
    refunded = {**pay, "id": "evt-refund", "type": "payment.refunded", "version": 2}
    refunded["data"] = {**pay["data"], "refunded_amount": "10.00"}
    harness.store([patient(), appointment("appointment.completed", 2), pay])
    harness.drain()
    harness.store([refunded])
    harness.drain()
    (receipt,) = books(harness, "RefundReceipt")
    assert money(receipt["TotalAmt"]) == Decimal("10.00")
    assert money(invoice(harness)["Balance"]) == 0
    (p,) = books(harness, "Payment")
    assert money(p["TotalAmt"]) == Decimal("258.50")


def test_reverse_payment_policy_reduces_then_deletes_the_payment(harness: SyncHarness) -> None:
    harness.put_tenant(
        mappings={"services": {"97110": "Therapeutic Exercise", "97140": "Manual Therapy"}},
        settings={"refund_policy": "reverse_payment"},
    )
    harness.store([patient(), appointment("appointment.completed", 2), payment("pay-1", "248.50", kind="patient")])
    harness.drain()
    base = payment("pay-1", "248.50", kind="patient", etype="payment.refunded", version=2)
    base["data"]["refunded_amount"] = "48.50"
    harness.store([base])
    harness.drain()
    (p,) = books(harness, "Payment")
    assert money(p["TotalAmt"]) == Decimal("200.00") and money(invoice(harness)["Balance"]) == Decimal("48.50")
    full = payment("pay-1", "248.50", kind="patient", etype="payment.refunded", version=3)
    full["data"]["refunded_amount"] = "248.50"
    harness.store([full])
    harness.drain()
    assert books(harness, "Payment") == [] and money(invoice(harness)["Balance"]) == VISIT_TOTAL
    assert books(harness, "RefundReceipt") == []


# ---------------------------------------------------------------------------------------------- edits, voids, deletes
def test_line_edit_updates_the_invoice_and_keeps_the_payment_linked(harness: SyncHarness) -> None:
    harness.store([patient(), appointment("appointment.completed", 2), payment("copay-1", "25.00")])
    harness.drain()
    harness.store([appointment("appointment.completed", 3, lines=[LINES[0]])])
    harness.drain()
    inv = invoice(harness)
    assert money(inv["TotalAmt"]) == Decimal("170.00") and money(inv["Balance"]) == Decimal("145.00")
    assert int(inv["SyncToken"]) >= 1


def test_payment_edit_is_a_sparse_update(harness: SyncHarness) -> None:
    harness.store([patient(), appointment("appointment.completed", 2), payment("copay-1", "25.00")])
    harness.drain()
    harness.store([payment("copay-1", "30.00", etype="payment.updated", version=2)])
    harness.drain()
    (p,) = books(harness, "Payment")
    assert money(p["TotalAmt"]) == Decimal("30.00") and p["SyncToken"] == "1"
    assert money(invoice(harness)["Balance"]) == VISIT_TOTAL - Decimal("30.00")


@pytest.mark.parametrize("policy", ["void", "delete"])
def test_cancel_after_invoicing_unlinks_the_copay_then_closes_the_invoice(harness: SyncHarness, policy: str) -> None:
    harness.put_tenant(
        mappings={"services": {"97110": "Therapeutic Exercise", "97140": "Manual Therapy"}},
        settings={"cancel_policy": policy},
    )
    harness.store([patient(), appointment("appointment.completed", 2), *visit_events()[::2]])
    harness.drain()
    assert money(invoice(harness)["Balance"]) == 0
    harness.store([event("appointment.cancelled", 3, {"appointment_id": "appt-1"})])
    harness.drain()
    invoices = books(harness, "Invoice")
    if policy == "void":
        assert len(invoices) == 1 and money(invoices[0]["TotalAmt"]) == 0
    else:
        assert invoices == []
    # The money stays on the customer, unapplied; the contractual adjustment (and its applier) is gone.
    pays = books(harness, "Payment")
    assert sorted(money(p["UnappliedAmt"]) for p in pays) == [Decimal("25.00"), Decimal("178.80")]
    assert books(harness, "CreditMemo") == []
    assert {o.status for o in harness.objects()} == {"synced"}


def test_uninvoicing_deletes_the_invoice(harness: SyncHarness) -> None:
    harness.put_tenant(
        mappings={"services": {"97110": "Therapeutic Exercise"}},
        settings={"invoice_trigger": "invoice_finalized"},
    )
    inv = {
        "invoice_id": "inv-1",
        "patient_id": "pat-1",
        "invoice_date": "2026-11-03",
        "lines": [{"service_code": "97110", "units": 1, "unit_price": "85.00"}],
    }
    pay = payment("pay-1", "85.00", None, kind="patient")
    pay["data"]["applies_to"] = [{"invoice_id": "inv-1", "amount": "85.00"}]
    harness.store([patient(), event("invoice.finalized", 1, inv), pay])
    harness.drain()
    assert money(invoice(harness)["Balance"]) == 0
    harness.store([event("invoice.unfinalized", 2, {"invoice_id": "inv-1"})])
    harness.drain()
    assert books(harness, "Invoice") == []
    (p,) = books(harness, "Payment")
    assert money(p["UnappliedAmt"]) == Decimal("85.00")
    # Finalized again: a new invoice, and the waiting payment links to it.
    harness.store([event("invoice.finalized", 3, inv)])
    harness.drain()
    (p,) = books(harness, "Payment")
    assert money(p["UnappliedAmt"]) == 0 and money(invoice(harness)["Balance"]) == 0


def test_deleting_a_payment_deletes_it_in_quickbooks_and_restores_the_balance(harness: SyncHarness) -> None:
    harness.store([patient(), appointment("appointment.completed", 2), payment("copay-1", "25.00")])
    harness.drain()
    harness.store([event("payment.deleted", 2, {"payment_id": "copay-1"})])
    harness.drain()
    assert books(harness, "Payment") == [] and money(invoice(harness)["Balance"]) == VISIT_TOTAL


def test_deleting_a_credit_removes_its_applying_payment_first(harness: SyncHarness) -> None:
    credit = {
        "credit_id": "wo-1",
        "patient_id": "pat-1",
        "amount": "20.00",
        "kind": "write_off",
        "issued_on": "2026-11-03",
        "applies_to": {"appointment_id": "appt-1", "amount": "20.00"},
    }
    harness.store([patient(), appointment("appointment.completed", 2), event("credit.issued", 1, credit)])
    harness.drain()
    (memo,) = books(harness, "CreditMemo")
    assert memo["DocNumber"].startswith("WO-") and money(invoice(harness)["Balance"]) == VISIT_TOTAL - 20
    harness.store([event("credit.deleted", 2, {"credit_id": "wo-1"})])
    harness.drain()
    assert books(harness, "CreditMemo") == [] and books(harness, "Payment") == []
    assert money(invoice(harness)["Balance"]) == VISIT_TOTAL


def test_cancelling_with_a_deposited_payment_fails_with_the_fix(harness: SyncHarness) -> None:
    harness.store([patient(), appointment("appointment.completed", 2), payment("copay-1", "25.00")])
    harness.drain()
    (pay,) = books(harness, "Payment")
    bank = next(a for a in books(harness, "Account") if a.get("AccountType") == "Bank")
    harness.control.ui(
        harness.realm_id,
        "Deposit",
        "create",
        {
            "DepositToAccountRef": {"value": bank["Id"]},
            "TxnDate": "2026-11-04",
            "Line": [{"Amount": 25, "LinkedTxn": [{"TxnId": pay["Id"], "TxnType": "Payment"}]}],
        },
    )
    harness.store([event("appointment.cancelled", 3, {"appointment_id": "appt-1"})])
    harness.drain()
    (failed,) = harness.objects("failed")
    assert failed.object_key == "appointment:appt-1" and failed.last_error["kind"] == "permanent"
    assert "deposit" in failed.last_error["suggested_fix"] and failed.last_error.get("qbo_code") == "6540"
    assert money(invoice(harness)["TotalAmt"]) == VISIT_TOTAL  # nothing half-done


def test_no_show_fee_rule(harness: SyncHarness) -> None:
    no_show = appointment("appointment.no_show", 2)
    no_show["data"]["no_show_fee"] = "40.00"
    harness.store([patient(), no_show])
    harness.drain()
    assert harness.invoices() == []  # default rule: no fee
    harness.put_tenant(mappings={"services": {"NO_SHOW": "No-show Fee"}}, settings={"no_show_fee": "invoice_fee"})
    harness.service.objects.touch(harness.service.objects.get(T, "appointment:appt-1"), reason="rule changed")  # type: ignore[arg-type]
    harness.drain()
    assert [money(i["TotalAmt"]) for i in harness.invoices()] == [Decimal("40.00")]


# ---------------------------------------------------------------------------------------------- settings
def test_payments_off_and_start_date_skip_with_the_rule_named(harness: SyncHarness) -> None:
    harness.put_tenant(
        mappings={"services": {"97110": "Therapeutic Exercise", "97140": "Manual Therapy"}},
        settings={"entities": {"payments": False}, "accounting_start_date": "2026-11-05"},
    )
    credit = {"credit_id": "cr-1", "patient_id": "pat-1", "amount": "5.00", "issued_on": "2026-11-01"}
    harness.store([patient(), payment("copay-1", "25.00"), event("credit.issued", 1, credit)])
    harness.drain()
    reasons = {o.object_key: o.status_reason for o in harness.objects("skipped")}
    assert "entities.payments is off" in reasons["payment:copay-1"]
    assert "accounting start date 2026-11-05" in reasons["credit:cr-1"]
    assert books(harness, "Payment") == [] and books(harness, "CreditMemo") == []


# ---------------------------------------------------------------------------------------------- exactly once
@pytest.fixture(params=["direct", "batched"])
def any_harness(request: pytest.FixtureRequest) -> SyncHarness:
    """The engine writing one call per document, and through batch calls (one object's families at once)."""
    return request.getfixturevalue("harness" if request.param == "direct" else "batching_harness")  # type: ignore[no-any-return]


def test_commit_then_drop_on_every_money_write_creates_no_duplicates(
    any_harness: SyncHarness, emulator: EmulatorControl
) -> None:
    harness = any_harness
    sc = pt_week(T, appointments=6, patients=3, seed=21, copays=True, remittances=True, write_off=True, refund=True)
    harness.store(sc.events)
    # Every customer, invoice and money write commits in QBO once with its response lost: the engine must read
    # back instead of creating a second document.
    harness.drain_dropping_every_write()
    assert emulator.stats(harness.realm_id)["dropped"] >= sc.payments + sc.credit_memos
    assert_scenario_books(harness, sc)


@pytest.mark.parametrize("order", DELIVERY_ORDERS)
def test_money_scenario_in_any_order(any_harness: SyncHarness, order: str) -> None:
    harness = any_harness
    sc = pt_week(T, appointments=10, patients=4, seed=13, copays=True, remittances=True, write_off=True, refund=True)
    harness.store(delivered(sc.events, order, seed=8))
    harness.drain(shuffle=random.Random(1))
    assert_scenario_books(harness, sc)


def assert_scenario_books(h: SyncHarness, sc: Any) -> None:
    invoices = h.invoices()
    assert len(invoices) == len(sc.invoiced) and sum(money(i["TotalAmt"]) for i in invoices) == sc.total
    assert sum(money(i["Balance"]) for i in invoices) == sc.open_balance == 0
    pays = books(h, "Payment")
    money_in = [p for p in pays if money(p["TotalAmt"]) > 0]
    assert len(money_in) == sc.payments + sc.remittance_payments
    assert sum(money(p["TotalAmt"]) for p in money_in) == sc.received + sc.refunded
    assert len(pays) - len(money_in) == sc.credit_memos  # one zero-amount applier per credit memo
    memos = books(h, "CreditMemo")
    assert len(memos) == sc.credit_memos and sum(money(m["TotalAmt"]) for m in memos) == sc.credited_total
    assert sum(money(r["TotalAmt"]) for r in books(h, "RefundReceipt")) == sc.refunded
    assert {o.status for o in h.objects()} == {"synced"}


def test_no_phi_in_any_money_request(harness: SyncHarness, emulator: EmulatorControl) -> None:
    sc = pt_week(T, appointments=8, patients=3, seed=9, copays=True, remittances=True, write_off=True, refund=True)
    harness.store(sc.events)
    harness.drain()
    sent = json.dumps(emulator.requests(harness.realm_id))
    for p in sc.patients.values():
        for field in ("first_name", "last_name", "email", "date_of_birth", "insurance_member_id"):
            assert p[field] not in sent, field


# ---------------------------------------------------------------------------------------------- closing figures
def test_calls_per_visit_with_copay_and_remittance(harness: SyncHarness, emulator: EmulatorControl) -> None:
    """Measured, not asserted tightly: printed for the report (pytest -s)."""
    visits = 10
    evs: list[dict[str, Any]] = [patient(f"pat-{n}") for n in range(visits)]
    items = []
    for n in range(visits):
        aid = f"appt-{n}"
        evs.append(appointment("appointment.booked", 1, aid, f"pat-{n}"))
        evs.append(payment(f"copay-{n}", "25.00", aid, pid=f"pat-{n}"))
        evs.append(appointment("appointment.completed", 2, aid, f"pat-{n}"))
        items.append(rem_item(aid, "178.80", "44.70", f"pat-{n}"))
    evs.append(remittance(items))
    harness.store(evs[:1])
    harness.drain()  # warm: the reference lists are loaded once per realm
    before = emulator.stats(harness.realm_id)
    # As it happens: bookings with copays, then completions, then the insurer's remittance a week later.
    for stage in (("appointment.booked", "payment.collected", "patient.upserted"), ("appointment.completed",)):
        harness.store([e for e in evs[1:] if e["type"] in stage])
        harness.drain()
    harness.store([evs[-1]])
    harness.drain()
    after = emulator.stats(harness.realm_id)
    per = {k: (after[k] - before[k]) / visits for k in ("reads", "writes", "queries", "batch")}
    print(f"\nQBO calls per visit (copay + completion + remittance with adjustment): {per}")
    assert all(money(i["Balance"]) == 0 for i in harness.invoices())
    assert per["writes"] <= 7 and per["reads"] + per["queries"] <= 1


def big_remittance(patients: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A visit per patient, and one remittance paying all of them with a contractual adjustment each."""
    visits: list[dict[str, Any]] = []
    items = []
    for n in range(patients):
        visits += [patient(f"pat-{n}"), appointment("appointment.completed", 2, f"appt-{n}", f"pat-{n}")]
        items.append(rem_item(f"appt-{n}", "200.00", "48.50", f"pat-{n}"))
    return visits, remittance(items, rid="era-big")


def test_a_remittance_writes_each_family_of_documents_at_once_in_shared_batch_calls(
    batching_harness: SyncHarness, emulator: EmulatorControl
) -> None:
    h = batching_harness
    visits, era = big_remittance(31)
    h.store(visits)
    h.drain()
    before = emulator.stats(h.realm_id)
    h.store([era])
    h.drain()
    after = emulator.stats(h.realm_id)
    # 31 credit memos, 31 payments, 31 zero-amount appliers: each family in two batch calls (30 + 1), no
    # single-document write. One after another, that was 93 batch windows.
    assert after["batch"] - before["batch"] == 6
    assert after["writes"] - before["writes"] == 0
    assert all(money(i["Balance"]) == 0 for i in h.invoices())
    assert len(books(h, "CreditMemo")) == 31
    assert sorted({money(p["TotalAmt"]) for p in books(h, "Payment")}) == [Decimal("0.00"), Decimal("200.00")]
    assert len(books(h, "Payment")) == 62
    era_obj = h.service.objects.get(T, "remittance:era-big")
    assert era_obj is not None and era_obj.status == "synced" and era_obj.intent is None
    assert len(era_obj.qbo) == 93 and all(slot["id"] for slot in era_obj.qbo.values())


def test_a_remittance_reads_its_visits_and_patients_in_batch_reads(
    harness: SyncHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    visits, era = big_remittance(12)
    harness.store(visits)
    harness.drain()
    harness.store([era])
    reads: list[str] = []
    repo = harness.service.objects
    get, get_many = repo.get, repo.get_many
    monkeypatch.setattr(repo, "get", lambda t, key: reads.append(key) or get(t, key))
    monkeypatch.setattr(repo, "get_many", lambda t, keys: reads.append(f"{len(list(keys))} keys") or get_many(t, keys))
    harness.drain()
    # 12 visits and 12 patients in one batch read; one read each made 36 (visit, customer, PHI guard).
    assert reads.count("24 keys") == 1
    assert [r for r in reads if r.startswith(("appointment:", "patient:"))] == []
    assert all(money(i["Balance"]) == 0 for i in harness.invoices())


def test_a_lost_batch_of_one_remittance_is_read_back_not_posted_twice(
    batching_harness: SyncHarness, emulator: EmulatorControl
) -> None:
    h = batching_harness
    visits, era = big_remittance(12)
    h.store(visits)
    h.drain()
    h.store([era])
    h.drain_dropping_every_write()  # each family's batch commits and its answer is lost, then is read back
    assert emulator.stats(h.realm_id)["dropped"] >= 3
    assert len(books(h, "CreditMemo")) == 12 and len(books(h, "Payment")) == 24
    assert all(money(i["Balance"]) == 0 for i in h.invoices())
    assert {o.status for o in h.objects()} == {"synced"}


def test_copay_posted_while_its_visit_syncs_is_linked_once_the_invoice_exists(harness: SyncHarness) -> None:
    """Found by the chaos soak: a copay reconciled concurrently with its visit saw no invoice yet, and recorded
    ``waiting_on`` the visit only after the visit had synced and woken its (then empty) list of dependents: the
    wake-up was lost and the copay stayed unapplied for good (the invoice's open balance off by the copay)."""
    harness.store([patient(), appointment("appointment.booked", 1)])
    harness.drain()
    harness.store([appointment("appointment.completed", 2), payment("copay-1", "25.00")])
    repo = harness.service.objects
    original = repo.finish
    raced: list[str] = []

    def finish(item: Any, **kw: Any) -> None:
        if item.object_key == "payment:copay-1" and not raced:
            # The visit's reconcile runs to the end (invoice created, dependents woken) between the copay's
            # read of its target and the copay recording its outcome: another worker, as on the stream.
            raced.append("visit")
            t = threading.Thread(target=harness.service.reconcile, args=(T, "appointment:appt-1"))
            t.start()
            t.join()
        original(item, **kw)

    repo.finish = finish  # type: ignore[method-assign]
    harness.service.reconcile(T, "payment:copay-1")
    repo.finish = original  # type: ignore[method-assign]
    harness.drain()
    assert raced
    (pay,) = books(harness, "Payment")
    assert money(pay["UnappliedAmt"]) == 0 and pay["Line"][0]["LinkedTxn"][0]["TxnId"] == invoice(harness)["Id"]
    assert money(invoice(harness)["Balance"]) == VISIT_TOTAL - Decimal("25.00")
