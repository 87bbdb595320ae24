"""A sync worker that dies in the middle of a reconcile (Lambda timeout, out of memory, container killed) after
QuickBooks committed a write: found by the chaos soak (``make soak``)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shared.adapters.dynamo import ObjectItem
from shared.adapters.objects import object_pk
from shared.services.sweeps import retry_sweep
from shared.services.sync import SyncService
from tests.integration.test_sync_money import T, appointment, patient
from tests.sync_harness import SyncHarness

pytestmark = pytest.mark.integration


def test_object_left_under_a_dead_workers_lease_is_picked_up_again(
    harness: SyncHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness.store([patient(), appointment("appointment.completed", 2)])
    original = SyncService._remember

    def crash(self: SyncService, item: Any, slot: str, entity: str, row: dict[str, Any], *a: Any, **kw: Any) -> Any:
        if entity == "Invoice":
            raise RuntimeError("worker killed after QuickBooks committed the invoice")
        return original(self, item, slot, entity, row, *a, **kw)

    monkeypatch.setattr(SyncService, "_remember", crash)
    with pytest.raises(RuntimeError):
        harness.service.reconcile(T, "appointment:appt-1")
    monkeypatch.setattr(SyncService, "_remember", original)
    # The stream re-delivers the batch while the dead worker's lease is still held: nothing to do for it.
    assert harness.service.reconcile(T, "appointment:appt-1") is None
    # The lease runs out (the function timeout); only the schedules are left to notice the object.
    item = ObjectItem.get(object_pk(T, "appointment:appt-1"), "OBJ")
    item.update(actions=[ObjectItem.lease_until.set(int(time.time()) - 1)])
    before = ObjectItem.get(object_pk(T, "appointment:appt-1"), "OBJ").updated_at
    retry_sweep()
    after = ObjectItem.get(object_pk(T, "appointment:appt-1"), "OBJ")
    assert after.updated_at != before, "nothing woke the object left by the dead worker"
    assert after.lease_until is None, "the dead worker's lease still holds the stream's records back"
    harness.drain()
    assert len(harness.invoices()) == 1
    done = ObjectItem.get(object_pk(T, "appointment:appt-1"), "OBJ")
    assert (done.status, done.dirty, done.synced_version) == ("synced", False, 2)


def test_reclaim_leaves_an_object_another_worker_claimed_meanwhile(harness: SyncHarness) -> None:
    from shared.adapters.objects import ObjectRepository

    harness.store([patient(), appointment("appointment.completed", 2)])
    key = object_pk(T, "appointment:appt-1")
    ObjectItem.get(key, "OBJ").update(actions=[ObjectItem.lease_until.set(int(time.time()) - 1)])
    stale = ObjectItem.get(key, "OBJ")  # what the sweep read: an expired lease
    assert ObjectRepository().claim(T, "appointment:appt-1") is not None  # a live worker takes it first
    assert ObjectRepository.reclaim(stale, reason="sweep") is False
    assert ObjectItem.get(key, "OBJ").lease_until > time.time()  # the live worker's lease is intact


def test_a_touch_frees_an_object_from_a_dead_workers_expired_lease(harness: SyncHarness) -> None:
    """Ops retries and dependants' wake-ups touch objects too; under an expired lease the stream would hold the
    touched object back forever."""
    from shared.adapters.objects import ObjectRepository
    from tests.sync_harness import stream_delivers

    harness.store([patient(), appointment("appointment.completed", 2)])
    key = object_pk(T, "appointment:appt-1")
    ObjectItem.get(key, "OBJ").update(actions=[ObjectItem.lease_until.set(int(time.time()) - 1)])
    assert ObjectRepository.touch_item(ObjectItem.get(key, "OBJ"), reason="retry requested by ops")
    touched = ObjectItem.get(key, "OBJ")
    assert touched.lease_until is None and stream_delivers(touched)
    # A live lease is left alone.
    assert ObjectRepository().claim(T, "appointment:appt-1") is not None
    assert ObjectRepository.touch_item(ObjectItem.get(key, "OBJ"), reason="again")
    assert ObjectItem.get(key, "OBJ").lease_until > time.time()
