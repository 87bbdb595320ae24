"""ChangeService and CdcSweep on the ledger (in-process moto) with a fake QBO: merges, conflicts, warnings,
direction, the scan fallback, and CDC paging past the object cap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.adapters.dynamo import NoticeItem, ObjectItem, save_all
from shared.adapters.notices import NoticeStore, OpsRecords
from shared.adapters.qbo.types import CallStats
from shared.adapters.qbo_links import QboLinks, link
from shared.domain.qbo_notices import Notice
from shared.services.qbo_changes import CdcSweep, ChangeService
from tests.builders import tenant_row

REALM = "4620816365"
T0 = "2026-01-20T09:00:00-08:00"
T1 = "2026-01-20T10:00:00-08:00"


class FakeQbo:
    def __init__(self, rows: dict[tuple[str, str], dict[str, Any]] | None = None) -> None:
        self.realm_id = REALM
        self.stats = CallStats()
        self.rows = rows or {}
        self.cdc_rows: list[tuple[str, dict[str, Any]]] = []
        self.cdc_calls: list[tuple[list[str], datetime]] = []

    def read(self, entity: str, qbo_id: str) -> dict[str, Any]:
        self.stats.reads += 1
        return self.rows[(entity, qbo_id)]

    def cdc(self, entities: list[str], changed_since: datetime) -> dict[str, list[dict[str, Any]]]:
        self.cdc_calls.append((entities, changed_since))
        out: dict[str, list[dict[str, Any]]] = {e: [] for e in entities}
        budget = 3  # this fake's object cap
        for entity, row in self.cdc_rows:
            when = datetime.fromisoformat(row["MetaData"]["LastUpdatedTime"])
            if entity in entities and when >= changed_since and budget > 0:
                out[entity].append(row)
                budget -= 1
        return out


def tenant(tenant_id: str = "clinic-1", **settings: Any) -> None:
    tenant_row(
        tenant_id,
        REALM,
        settings={"direction": "both", **settings},
        mappings={"services": {"97110": "Therapy"}},
        callback_url="https://platform.example/cb",
    )


def obj(key: str, slot: str, info: dict[str, Any], *, linked: bool = True, dirty: bool = False) -> None:
    ObjectItem(
        f"OBJ#clinic-1#{key}",
        "OBJ",
        rtype="object",
        tenant_id="clinic-1",
        object_key=key,
        kind=key.split(":", maxsplit=1)[0],
        desired_version=2 if dirty else 1,
        synced_version=1,
        dirty=dirty,
        qbo={slot: info},
        updated_at=datetime.now(UTC).isoformat(),
    ).save()
    if linked:
        link(REALM, info["type"], info["id"], "clinic-1", key, slot)


def invoice_slot(**kw: Any) -> dict[str, Any]:
    return {
        "type": "Invoice",
        "id": "130",
        "sync_token": "0",
        "last_updated": T0,
        "total": 100.0,
        "balance": 100.0,
        "state": "active",
        **kw,
    }


def notice(entity: str, ident: str, op: str, when: str = T1, **data: Any) -> Notice:
    return Notice(REALM, entity, ident, op, when, "webhook-cloudevents", f"ce:{entity}-{ident}-{op}", dict(data))


@pytest.fixture
def svc(moto_aws: dict[str, str]) -> tuple[ChangeService, list[dict[str, Any]], FakeQbo]:
    sent: list[dict[str, Any]] = []
    qbo = FakeQbo()

    class Sink:
        def enqueue(self, callback: dict[str, Any]) -> None:
            sent.append(callback)

    return ChangeService(lambda realm: qbo, callbacks=Sink()), sent, qbo


def invoice_row(token: str, total: float, when: str = T1) -> dict[str, Any]:
    return {"Id": "130", "SyncToken": token, "TotalAmt": total, "Balance": total, "MetaData": {"LastUpdatedTime": when}}


def test_conflict_is_audited_and_flagged_not_silently_overwritten(svc: Any) -> None:
    service, sent, qbo = svc
    tenant()
    obj("appointment:a1", "invoice", invoice_slot(), dirty=True)
    qbo.rows[("Invoice", "130")] = invoice_row("1", 90.0)
    assert service.handle(notice("Invoice", "130", "Update")) == "updated"
    [cb] = sent
    assert cb["type"] == "invoice.updated_in_qbo" and cb["data"]["conflict"] is True
    [audit] = OpsRecords().audits("clinic-1")
    assert audit.action == "qbo_conflict" and audit.target == "appointment:a1"
    slot = ObjectItem.get("OBJ#clinic-1#appointment:a1", "OBJ").qbo["invoice"]
    assert slot["conflict"]["desired_version"] == 2 and slot["total"] == 90.0


def test_to_qbo_tenants_get_no_callbacks_but_the_ledger_follows(svc: Any) -> None:
    service, sent, qbo = svc
    tenant(direction="to_qbo")
    obj("appointment:a1", "invoice", invoice_slot())
    assert service.handle(notice("Invoice", "130", "Delete")) == "deleted"
    assert sent == [] and qbo.stats.reads == 0
    assert ObjectItem.get("OBJ#clinic-1#appointment:a1", "OBJ").qbo["invoice"]["state"] == "deleted"


def test_customer_merge_relinks_the_patient_to_the_surviving_customer(svc: Any) -> None:
    service, sent, qbo = svc
    tenant()
    obj("patient:p1", "customer", {"type": "Customer", "id": "61", "sync_token": "0", "last_updated": T0})
    qbo.rows[("Customer", "58")] = {"Id": "58", "SyncToken": "4", "MetaData": {"LastUpdatedTime": T1}}
    assert service.handle(notice("Customer", "58", "Merge", deleted_id="61")) == "merged"
    assert ObjectItem.get("OBJ#clinic-1#patient:p1", "OBJ").qbo["customer"]["id"] == "58"
    links = QboLinks()
    assert links.find(REALM, "Customer", "61") is None
    assert links.find(REALM, "Customer", "58").object_key == "patient:p1"  # type: ignore[union-attr]
    assert [(c["type"], c["data"]["merged_away_id"]) for c in sent] == [("customer.merged_in_qbo", "61")]
    assert service.handle(notice("Customer", "58", "Merge", deleted_id="61")) == "not_ours"  # redelivery
    assert len(sent) == 1


def test_deactivated_customer_and_mapped_item_are_ops_warnings(svc: Any) -> None:
    service, sent, qbo = svc
    tenant()
    obj("patient:p1", "customer", {"type": "Customer", "id": "61", "sync_token": "0", "last_updated": T0})
    qbo.rows[("Customer", "61")] = {"Id": "61", "SyncToken": "1", "Active": False, "MetaData": {"LastUpdatedTime": T1}}
    qbo.rows[("Item", "7")] = {"Id": "7", "Name": "Therapy", "SyncToken": "2", "Active": False}
    assert service.handle(notice("Customer", "61", "Update")) == "warned"
    assert service.handle(notice("Item", "7", "Update")) == "warned"
    reasons = sorted(a.detail["reason"] for a in OpsRecords().audits("clinic-1"))
    assert reasons == ["customer_deactivated", "item_deactivated"] and sent == []


def test_a_document_without_a_link_is_not_ours_and_the_ledger_is_not_searched(
    svc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Links are written with every recorded document; a document without one is a QuickBooks user's (or ours, its
    write still being recorded). No fallback search: it scanned the whole ledger for each such notice."""
    service, sent, qbo = svc
    tenant()
    obj("appointment:a1", "invoice", invoice_slot(), linked=False)

    def no_scan(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the ledger was scanned")

    monkeypatch.setattr(ObjectItem, "scan", no_scan)
    assert service.handle(notice("Invoice", "130", "Delete")) == "not_ours"
    assert sent == [] and qbo.stats.reads == 0
    assert QboLinks().find(REALM, "Invoice", "130") is None


def test_echo_of_a_recorded_write_needs_no_read_and_sends_nothing(svc: Any) -> None:
    service, sent, qbo = svc
    tenant()
    obj("appointment:a1", "invoice", invoice_slot(last_updated=T1, sync_token="3"))
    assert service.handle(notice("Invoice", "130", "Update", when="2026-01-20T18:00:00.420Z")) == "echo"
    assert sent == [] and qbo.stats.reads == 0


def test_a_batch_read_ahead_serves_one_lookup_and_a_second_notice_reads_the_object_again(svc: Any) -> None:
    service, sent, qbo = svc
    tenant()
    obj("appointment:a1", "invoice", invoice_slot())
    qbo.rows[("Invoice", "130")] = invoice_row("1", 120.0)
    reads: list[str] = []
    real_get = service.slots.get
    service.slots.get = lambda tenant_id, key: reads.append(key) or real_get(tenant_id, key)
    batch = [notice("Invoice", "130", "Update"), notice("Invoice", "130", "Delete", when="2026-01-20T11:00:00-08:00")]
    with service.prefetched(batch):
        assert service.handle(batch[0]) == "updated"
        assert reads == []  # read ahead
        # The first notice wrote the object: the second must see that write, not the batch's early read.
        assert service.handle(batch[1]) == "deleted"
    assert reads == ["appointment:a1"]
    assert [c["type"] for c in sent] == ["invoice.updated_in_qbo", "invoice.deleted_in_qbo"]


def test_a_delivery_stores_each_new_notice_once(moto_aws: dict[str, str]) -> None:
    store = NoticeStore()
    old, new = notice("Invoice", "130", "Update"), notice("Invoice", "131", "Create")
    assert store.put(old)
    handled = store.get(REALM, old.dedupe_key)
    assert handled is not None
    handled.outcome = "echo"
    save_all(NoticeItem, [handled])  # as the change worker records it
    assert store.put_many([new, old, new]) == [True, False, False]
    kept = store.get(REALM, old.dedupe_key)
    assert kept is not None and kept.outcome == "echo"  # a known notice is not written again
    assert store.get(REALM, new.dedupe_key) is not None


def test_a_cdc_change_in_the_same_second_as_our_write_is_not_taken_for_an_echo(svc: Any) -> None:
    # The QBO user voided the invoice within the second of our write: LastUpdatedTime (whole seconds) is equal,
    # the SyncToken is newer. The CDC row carries the body, so the token decides, with no read.
    service, sent, qbo = svc
    tenant()
    obj("appointment:a1", "invoice", invoice_slot(last_updated=T1, sync_token="0"))
    voided = {**invoice_row("1", 0.0), "PrivateNote": "Voided"}
    cdc = Notice(REALM, "Invoice", "130", "Update", T1, "cdc", "cdc:Invoice:130:t1", {"entity": voided})
    assert service.handle(cdc) == "voided"
    assert [cb["type"] for cb in sent] == ["invoice.voided_in_qbo"] and qbo.stats.reads == 0


def test_cdc_pages_past_the_cap_and_reports_drift(svc: Any) -> None:
    _, _, qbo = svc
    tenant()
    obj("appointment:a1", "invoice", invoice_slot())
    base = datetime.now(UTC).replace(microsecond=0)
    for n in range(7):  # seven payments not linked to our invoices, one second apart
        when = (base - timedelta(seconds=10 - n)).isoformat()
        row = {"Id": f"p{n}", "SyncToken": "0", "Line": [], "MetaData": {"LastUpdatedTime": when}}
        qbo.cdc_rows.append(("Payment", row))
    qbo.cdc_rows.append(("Invoice", invoice_row("2", 80.0, base.isoformat())))
    sweep = CdcSweep(lambda realm: qbo, cap=3)
    report = sweep.sweep_realm(REALM)
    assert len(qbo.cdc_calls) > 2  # the capped first answer was re-asked per entity
    assert report["changes"] == 8 and not report["window_exhausted"]
    assert sweep.ops.cursor(REALM) is not None
    [drift] = report["drift"]
    assert (drift["kind"], drift["qbo"]["total"], drift["ledger"]["total"]) == ("changed_in_qbo", 80.0, 100.0)
    assert NoticeStore().get(REALM, f"cdc:Invoice:130:{base.isoformat()}") is not None
    assert OpsRecords().drift(REALM)["drift"] == report["drift"]  # type: ignore[index]


def payment_row(token: str, parts: dict[str, str], when: str = T1, **kw: Any) -> dict[str, Any]:
    """A QBO Payment applying ``parts`` (invoice Id → amount)."""
    lines = [{"Amount": a, "LinkedTxn": [{"TxnId": i, "TxnType": "Invoice"}]} for i, a in parts.items()]
    total = sum(float(a) for a in parts.values())
    return {"Id": "900", "SyncToken": token, "TotalAmt": total, "TxnDate": "2026-01-20", "Line": lines,
            "MetaData": {"LastUpdatedTime": when}, **kw}  # fmt: skip


def three_invoices() -> None:
    for n, inv in enumerate(("130", "131", "132"), start=1):
        obj(f"appointment:a{n}", "invoice", invoice_slot(id=inv))


def parts_of(key: str) -> dict[str, Any]:
    return ObjectItem.get(f"OBJ#clinic-1#{key}", "OBJ", consistent_read=True).qbo.get("payment:qbo:900") or {}


def test_a_qbo_payment_across_several_invoices_is_followed_on_each_of_them(svc: Any) -> None:
    """A patient pays two visits at once in QuickBooks, the payment is then moved from one visit to a third, and
    deleted: every invoice it touched is told its part each time, with one metered read per change."""
    service, sent, qbo = svc
    tenant()
    three_invoices()
    qbo.rows[("Payment", "900")] = payment_row("0", {"130": "30.00", "131": "45.00"})
    assert service.handle(notice("Payment", "900", "Create")) == "recorded"
    assert sorted((c["type"], c["object_key"], c["data"]["amount"]) for c in sent) == [
        ("payment.recorded_in_qbo", "appointment:a1", 30.0),
        ("payment.recorded_in_qbo", "appointment:a2", 45.0),
    ]
    assert {c["data"]["payment_total"] for c in sent} == {75.0} and len({c["id"] for c in sent}) == 2
    assert [ln.object_key for ln in QboLinks().find_all(REALM, "Payment", "900")] == [
        "appointment:a1",
        "appointment:a2",
    ]
    assert qbo.stats.reads == 1

    sent.clear()
    moved = payment_row("1", {"131": "50.00", "132": "20.00"}, when="2026-01-20T11:00:00-08:00")
    qbo.rows[("Payment", "900")] = moved
    assert service.handle(notice("Payment", "900", "Update", when="2026-01-20T11:00:00-08:00")) == "recorded"
    got = sorted((c["type"], c["object_key"], c["data"]["amount"], c["data"].get("previous_amount")) for c in sent)
    assert got == [
        ("payment.recorded_in_qbo", "appointment:a3", 20.0, None),
        ("payment.updated_in_qbo", "appointment:a1", 0.0, 30.0),
        ("payment.updated_in_qbo", "appointment:a2", 50.0, 45.0),
    ]
    assert [parts_of(f"appointment:a{n}")["total"] for n in (1, 2, 3)] == [0.0, 50.0, 20.0]
    assert len(QboLinks().find_all(REALM, "Payment", "900")) == 3 and qbo.stats.reads == 2

    sent.clear()  # redelivered: nothing new
    assert service.handle(notice("Payment", "900", "Update", when="2026-01-20T11:00:00-08:00")) == "echo"
    assert sent == [] and qbo.stats.reads == 2

    assert service.handle(notice("Payment", "900", "Delete", when="2026-01-20T12:00:00-08:00")) == "deleted"
    assert sorted((c["type"], c["object_key"]) for c in sent) == [
        ("payment.deleted_in_qbo", f"appointment:a{n}") for n in (1, 2, 3)
    ]
    assert {parts_of(f"appointment:a{n}")["state"] for n in (1, 2, 3)} == {"deleted"} and qbo.stats.reads == 2


def test_a_payment_recorded_under_a_link_to_one_invoice_only_is_updated_not_recorded_again(svc: Any) -> None:
    """Links written before they could name several invoices (or a notice interrupted after a slot was written and
    before its link): a later change finds the slot on the other invoice and reports it as an update."""
    service, sent, qbo = svc
    tenant()
    three_invoices()
    qbo.rows[("Payment", "900")] = payment_row("0", {"130": "30.00", "131": "45.00"})
    assert service.handle(notice("Payment", "900", "Create")) == "recorded"
    link(REALM, "Payment", "900", "clinic-1", "appointment:a2", "payment:qbo:900")  # the old single link
    sent.clear()
    qbo.rows[("Payment", "900")] = payment_row("1", {"130": "35.00", "131": "45.00"}, when="2026-01-20T11:00:00-08:00")
    assert service.handle(notice("Payment", "900", "Update", when="2026-01-20T11:00:00-08:00")) == "updated"
    assert sorted((c["type"], c["object_key"], c["data"]["amount"]) for c in sent) == [
        ("payment.updated_in_qbo", "appointment:a1", 35.0),
        ("payment.updated_in_qbo", "appointment:a2", 45.0),
    ]
    assert len(QboLinks().find_all(REALM, "Payment", "900")) == 2


def test_our_own_payment_across_several_invoices_stays_with_its_payment_object(svc: Any) -> None:
    """An insurer remittance qbsync posted as one payment over two visits: a QuickBooks edit of it is the
    remittance's, and records no QuickBooks-side payment on the visits."""
    service, sent, qbo = svc
    tenant()
    three_invoices()
    mine = {"type": "Payment", "id": "900", "sync_token": "0", "last_updated": T0, "total": 75.0, "state": "active"}
    obj("remittance:r1", "payment", mine)
    qbo.rows[("Payment", "900")] = payment_row("1", {"130": "30.00", "131": "40.00"})
    assert service.handle(notice("Payment", "900", "Update")) == "updated"
    [cb] = sent
    assert (cb["type"], cb["object_key"], cb["data"]["amount"]) == ("payment.updated_in_qbo", "remittance:r1", 70.0)
    assert parts_of("appointment:a1") == {} and parts_of("appointment:a2") == {}
