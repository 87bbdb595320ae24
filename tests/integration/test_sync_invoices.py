"""Sync engine against the QBO emulator: invoices exactly once, in any order, with faults."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import boto3
import pytest

from infra.demo.scenario import pt_week
from infra.qbo_emulator.control import EmulatorControl
from shared.adapters.objects import events_of
from tests.sync_harness import DELIVERY_ORDERS, SyncHarness, delivered, money


def _books_summary(h: SyncHarness) -> dict[str, tuple[str, Decimal]]:
    """DocNumber -> (customer id, total) of every active invoice."""
    return {inv["DocNumber"]: (inv["CustomerRef"]["value"], money(inv["TotalAmt"])) for inv in h.invoices()}


def test_fifty_appointments_become_exactly_the_expected_invoices(harness: SyncHarness) -> None:
    sc = pt_week(harness.tenant_id, appointments=50, patients=12)
    harness.store(sc.events)
    harness.drain()

    invoices = harness.invoices()
    assert len(invoices) == len(sc.invoiced) == 50
    assert sum(money(i["TotalAmt"]) for i in invoices) == sc.total
    books = harness.control.books(harness.realm_id)
    classes = {c["Id"]: c["Name"] for c in books["Class"]}
    departments = {d["Id"]: d["Name"] for d in books["Department"]}
    by_class: dict[str, Decimal] = {}
    by_dept: dict[str, Decimal] = {}
    for inv in invoices:
        by_class[classes[inv["ClassRef"]["value"]]] = by_class.get(classes[inv["ClassRef"]["value"]], 0) + money(
            inv["TotalAmt"]
        )
        dept = departments[inv["DepartmentRef"]["value"]]
        by_dept[dept] = by_dept.get(dept, 0) + money(inv["TotalAmt"])
    names = {
        "prov-a": "Dr. Adams",
        "prov-b": "Dr. Baker",
        "prov-c": "Dr. Chen",
        "loc-1": "Downtown",
        "loc-2": "Northside",
    }
    assert by_class == {names[p]: v for p, v in sc.by_provider.items()}
    assert by_dept == {names[loc]: v for loc, v in sc.by_location.items()}
    # One customer per patient seen, redacted names only.
    customers = books["Customer"]
    assert len(customers) == len({e["data"]["patient_id"] for e in sc.events if e["type"] == "appointment.completed"})
    assert all(c["DisplayName"].startswith("Patient ") for c in customers)
    assert {o.status for o in harness.objects()} == {"synced"}


def _expected(h: SyncHarness, seed: int) -> tuple[dict[str, tuple[str, Decimal]], list[dict]]:
    sc = pt_week(h.tenant_id, appointments=20, patients=6, seed=seed)
    h.store(sc.events)
    h.drain()
    return _books_summary(h), sc.events


@pytest.mark.parametrize("order", DELIVERY_ORDERS)
def test_delivery_order_and_duplicates_do_not_change_the_books(
    harness: SyncHarness, emulator: EmulatorControl, order: str
) -> None:
    sc = pt_week(harness.tenant_id, appointments=20, patients=6, seed=11)
    harness.store(delivered(sc.events, order, seed=3))
    harness.drain(shuffle=random.Random(5))
    invoices = harness.invoices()
    assert len(invoices) == len(sc.invoiced)
    assert len({i["DocNumber"] for i in invoices}) == len(invoices)
    assert sum(money(i["TotalAmt"]) for i in invoices) == sc.total
    assert len(emulator.books(harness.realm_id)["Customer"]) == len(
        {e["data"]["patient_id"] for e in sc.events if e["type"] == "appointment.completed"}
    )


def test_commit_then_drop_on_every_write_in_turn_creates_no_duplicates(
    harness: SyncHarness, emulator: EmulatorControl
) -> None:
    sc = pt_week(harness.tenant_id, appointments=8, patients=3, seed=5)
    harness.store(sc.events)
    # Every customer, invoice and money write commits in QBO once with its response lost: the engine must read
    # back instead of creating a second document.
    harness.drain_dropping_every_write()

    creates = len(sc.invoiced) + len(
        {e["data"]["patient_id"] for e in sc.events if e["type"] == "appointment.completed"}
    )
    assert emulator.stats(harness.realm_id)["dropped"] >= creates
    invoices = harness.invoices()
    assert len(invoices) == len(sc.invoiced)
    assert len({i["DocNumber"] for i in invoices}) == len(invoices)
    assert sum(money(i["TotalAmt"]) for i in invoices) == sc.total
    customers = emulator.books(harness.realm_id)["Customer"]
    assert len(customers) == creates - len(sc.invoiced)
    assert {o.status for o in harness.objects()} == {"synced"}


def test_missing_mapping_is_a_visible_failure_with_a_fix_and_retry_syncs_it(
    harness: SyncHarness, moto_aws: dict[str, str]
) -> None:
    harness.put_tenant(mappings={"services": {"97110": "Therapeutic Exercise"}})
    sc = pt_week(harness.tenant_id, appointments=1, patients=1, seed=2, phi=False)
    appt = next(e for e in sc.events if e["type"] == "appointment.completed")
    appt["data"]["lines"] = [{"service_code": "97999", "units": 1, "unit_price": "40.00"}]
    harness.store([e for e in sc.events if e["type"] != "appointment.completed"] + [appt])
    harness.drain()
    failed = harness.objects("failed")
    assert len(failed) == 1
    err = failed[0].last_error
    assert (
        err["kind"] == "permanent"
        and "97999" in err["message"]
        and "qbsync mappings set services 97999" in err["suggested_fix"]
    )
    msgs = boto3.client("sqs").receive_message(QueueUrl=moto_aws["DLQ_URL"], MaxNumberOfMessages=10)["Messages"]
    body = json.loads(msgs[0]["Body"])
    assert body["object_key"] == "appointment:appt-0001" and body["error"]["suggested_fix"]
    assert harness.invoices() == []

    harness.put_tenant(mappings={"services": {"97110": "Therapeutic Exercise", "97999": "Manual Therapy"}})
    harness.service.objects.touch(failed[0], reason="retry after mapping fix")
    harness.drain()
    assert [money(i["TotalAmt"]) for i in harness.invoices()] == [Decimal("40.00")]


def test_no_phi_reaches_quickbooks(harness: SyncHarness, emulator: EmulatorControl) -> None:
    sc = pt_week(harness.tenant_id, appointments=10, patients=4, seed=9, phi=True)
    harness.store(sc.events)
    harness.drain()
    sent = json.dumps(emulator.requests(harness.realm_id))
    for p in sc.patients.values():
        for field in ("first_name", "last_name", "email", "date_of_birth", "insurance_member_id"):
            assert p[field] not in sent, field
    for needle in ("M54.5", "M25.561", "knee rehab", "less pain"):
        assert needle not in sent


def test_an_older_version_never_overwrites_a_newer_one(harness: SyncHarness) -> None:
    sc = pt_week(harness.tenant_id, appointments=1, patients=1, seed=4, phi=False)
    completed = next(e for e in sc.events if e["type"] == "appointment.completed")
    newer = {**completed, "id": "evt-newer", "version": 5}
    newer["data"] = {**completed["data"], "lines": [{"service_code": "97110", "units": 1, "unit_price": "99.00"}]}
    older = {**completed, "id": "evt-older", "version": 3}
    harness.store([e for e in sc.events if e["type"] == "patient.upserted"] + [newer, older])
    harness.drain()

    appt = harness.service.objects.get(harness.tenant_id, "appointment:appt-0001")
    assert appt is not None and appt.desired_version == 5 and appt.desired_event_id == "evt-newer"
    outcomes = {e.event_id: e.outcome for e in events_of(harness.tenant_id, appt.object_key)}
    assert outcomes == {"evt-newer": "applied", "evt-older": "stale"}
    assert [money(i["TotalAmt"]) for i in harness.invoices()] == [Decimal("99.00")]
