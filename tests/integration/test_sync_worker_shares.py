"""The sync worker takes at most ``SYNC_REALM_SHARE`` objects of one realm per invocation; the rest of that realm's
objects wait in its queue and go back to the stream a share per invocation, so a flooded realm does not hold up
the other realms' records."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.adapters.dynamo import EventItem, ObjectItem
from shared.adapters.objects import object_pk
from shared.config import reset_settings_cache
from tests.builders import event_row, lambda_context, tenant_row

pytestmark = pytest.mark.integration


def _tenant(tenant_id: str, realm_id: str) -> None:
    # QuickBooks → platform only: a reconcile ends "skipped" without calling QuickBooks.
    tenant_row(tenant_id, realm_id, settings={"direction": "from_qbo"})


def _dirty(tenant_id: str, n: int) -> ObjectItem:
    item = ObjectItem(
        object_pk(tenant_id, f"appointment:a{n}"),
        "OBJ",
        rtype="object",
        tenant_id=tenant_id,
        object_key=f"appointment:a{n}",
        kind="appointment",
        desired_version=1,
        dirty=True,
        updated_at="2026-11-01T00:00:00.000+00:00",
    )
    item.save()
    return item


def _records(items: list[ObjectItem] | list[EventItem]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventID": f"e{i}",
                "eventName": "MODIFY",
                "eventSource": "aws:dynamodb",
                "dynamodb": {"NewImage": item.serialize(), "SequenceNumber": f"{i + 1:021d}"},
            }
            for i, item in enumerate(items)
        ]
    }


@pytest.fixture
def handler(moto_aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The sync worker's handler with a share of 2, no realms seen yet and no rows claimed."""
    monkeypatch.setenv("SYNC_REALM_SHARE", "2")
    reset_settings_cache()
    from functions.sync_worker import handler

    monkeypatch.setattr(handler, "SHARES", handler.RealmShares())
    monkeypatch.setattr(handler, "CLAIMED", handler.Claimed())
    yield handler
    reset_settings_cache()


def _state(tenant_id: str, n: int) -> ObjectItem:
    return ObjectItem.get(object_pk(tenant_id, f"appointment:a{n}"), "OBJ")


# Past the share, 3 objects are parked one write each; 12 (SyncService's TRANSACT_MIN or more) in transactions.
@pytest.mark.parametrize("flood", [5, 14])
def test_a_flooded_realm_takes_its_share_and_the_rest_waits_in_its_queue(
    handler: Any, flood: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.adapters.objects import ObjectRepository

    together: list[int] = []
    park_together = ObjectRepository.park_together

    def counted(self: ObjectRepository, keys: Any, *args: Any) -> list[str | None]:
        together.append(len(keys))
        return park_together(self, keys, *args)

    monkeypatch.setattr(ObjectRepository, "park_together", counted)
    _tenant("flooded", "realm-1")
    _tenant("quiet", "realm-2")
    items = [_dirty("flooded", n) for n in range(flood)]
    quiet = [_dirty("quiet", n) for n in range(2)]

    assert handler.lambda_handler(_records(items + quiet), lambda_context()) == {"batchItemFailures": []}
    after = [_state("flooded", n) for n in range(flood)]
    assert sorted(o.status for o in after) == ["pending"] * (flood - 2) + ["skipped"] * 2
    assert [o.status for o in after[:2]] == ["skipped"] * 2  # its share: the oldest records
    assert [(o.status, o.dirty) for o in (_state("quiet", n) for n in range(2))] == [("skipped", False)] * 2
    # Of those left, the invocation handed the oldest two back to the stream (dirty, no lease: the filter delivers
    # them); the others are still parked, leased to the queue, so the stream does not deliver them.
    left = [o for o in after if o.status == "pending"]
    assert all(o.dirty for o in left)
    handed_back = [o for o in left if o.lease_until is None]
    parked = [o for o in left if o.lease_until is not None]
    assert len(handed_back) == 2 and len(parked) == flood - 4
    assert all(o.lease_owner == "parked" and o.gsi2pk == "PARK#realm-1" for o in parked)
    assert all(o.gsi2pk is None and o.gsi1pk == "STATUS#pending" for o in handed_back)  # listed as before
    assert together == ([] if flood == 5 else [flood - 2])

    # The handed-back records come round in the next invocation, which takes its share and hands back two more.
    handler.lambda_handler(_records(handed_back), lambda_context())
    assert sorted(_state("flooded", n).status for n in range(flood)) == ["pending"] * (flood - 4) + ["skipped"] * 4
    for _ in range(flood):  # each invocation: the records handed back last time
        back = [o for o in (_state("flooded", n) for n in range(flood)) if o.dirty and o.lease_until is None]
        if not back:
            break
        handler.lambda_handler(_records(back), lambda_context())
    assert sorted(_state("flooded", n).status for n in range(flood)) == ["skipped"] * flood


def test_a_realm_alone_takes_all_its_objects_and_its_queue_comes_back_whole(handler: Any) -> None:
    """No other realm has work: holding the realm to a share would only leave its /batch calls part-empty."""
    from shared.adapters.objects import ObjectRepository

    _tenant("alone", "realm-1")
    items = [_dirty("alone", n) for n in range(6)]
    # Two objects were parked while other realms had work; the realm is alone now.
    assert ObjectRepository.park("alone", "appointment:a4", "realm-1", ttl_s=600)
    assert ObjectRepository.park("alone", "appointment:a5", "realm-1", ttl_s=600)
    handler.lambda_handler(_records(items[:4]), lambda_context())
    assert [_state("alone", n).status for n in range(4)] == ["skipped"] * 4  # not held to its share of 2
    back = [_state("alone", n) for n in (4, 5)]
    assert [(o.status, o.dirty, o.lease_until, o.gsi2pk) for o in back] == [("pending", True, None, None)] * 2


def test_a_parked_object_the_queue_forgot_is_taken_back_by_the_retry_sweep(moto_aws: dict[str, str]) -> None:
    from shared.adapters.objects import ObjectRepository
    from shared.services.sweeps import retry_sweep

    _tenant("flooded", "realm-1")
    _dirty("flooded", 0)
    assert ObjectRepository.park("flooded", "appointment:a0", "realm-1", ttl_s=60)
    assert not ObjectRepository.park("flooded", "appointment:a0", "realm-1", ttl_s=60)  # already parked
    parked = _state("flooded", 0)
    assert retry_sweep(now=datetime.now(UTC))["abandoned"] == 0  # within its TTL: the queue owns it
    assert retry_sweep(now=datetime.now(UTC) + timedelta(seconds=120))["abandoned"] == 1
    back = _state("flooded", 0)
    assert back.dirty and back.lease_until is None and back.lease_owner is None and back.gsi2pk is None
    assert parked.lease_until is not None
    assert ObjectRepository.unpark("realm-1", 10) == 0  # nothing left in the queue


def _connect(realm_id: str) -> None:
    """The realm's connection, recorded as a connect would."""
    from shared.adapters.connections import ConnectionRepository
    from shared.domain.oauth import TokenSet

    tokens = TokenSet("at", "rt", time.time() + 3600, time.time() + 86_400, None, 1)
    ConnectionRepository().upsert_connected(realm_id, secret_id="s", tokens=tokens, company={})


def _connection_health(realm_id: str) -> dict[str, Any]:
    """``GET /ops/connections``' row for the realm."""
    from shared.services.ops import OpsRequest, connections

    status, body = connections(OpsRequest())
    assert status == 200
    return next(row for row in body["items"] if row["realm_id"] == realm_id)


def test_a_queue_that_stopped_moving_is_restarted_by_the_retry_sweep(
    handler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The records that would have handed the queue on never came (the invocation was cut short, its events were
    duplicates): after ``SYNC_PARK_STALL_S`` the retry sweep hands a share back itself; an empty queue is
    forgotten."""
    from shared.adapters.dynamo import ParkQueueItem
    from shared.services.sweeps import retry_sweep

    _tenant("flooded", "realm-1")
    _tenant("quiet", "realm-2")
    _connect("realm-1")
    items = [_dirty("flooded", n) for n in range(5)]
    handler.lambda_handler(_records([*items, _dirty("quiet", 0)]), lambda_context())
    # Its share of 2 taken, 3 parked, 2 of them handed back; their records are lost (never delivered).
    parked = [n for n in range(5) if _state("flooded", n).lease_owner == "parked"]
    assert len(parked) == 1
    assert [(q.sk, q.rtype) for q in ParkQueueItem.query("PARKQUEUES")] == [("realm-1", "parkqueue")]

    now = datetime.now(UTC)
    assert retry_sweep(now=now)["queued"] == 0  # it moved just now: its chain may be alive
    health = _connection_health("realm-1")
    assert (health["queued_objects"], health["warnings"]) == (1, [])
    assert datetime.fromisoformat(health["queue_moved_at"]) >= now - timedelta(seconds=5)
    monkeypatch.setenv("SYNC_PARK_STALL_S", "1")
    reset_settings_cache()
    time.sleep(2.1)  # twice the stall setting: ops are warned (the sweep should have restarted it by now)
    assert "without moving" in _connection_health("realm-1")["warnings"][0]
    monkeypatch.delenv("SYNC_PARK_STALL_S")
    reset_settings_cache()
    assert retry_sweep(now=now + timedelta(seconds=61))["queued"] == 1
    back = _state("flooded", parked[0])
    assert (back.dirty, back.lease_until, back.lease_owner, back.gsi2pk) == (True, None, None, None)
    assert [q.sk for q in ParkQueueItem.query("PARKQUEUES")] == ["realm-1"]  # moved again: given its time
    assert retry_sweep(now=now + timedelta(seconds=122))["queued"] == 0
    assert list(ParkQueueItem.query("PARKQUEUES")) == []  # empty: forgotten
    final = _connection_health("realm-1")
    assert (final["queued_objects"], final["queue_moved_at"]) == (0, None)


def test_a_queue_that_only_takes_parks_has_not_moved_and_is_restarted(handler: Any) -> None:
    """Parks alone do not count as movement: a realm whose records keep coming and keep being parked, each
    invocation counting on records to come, hands nothing back; after ``SYNC_PARK_STALL_S`` without a hand-back the
    retry sweep restarts the queue, however recent its last park. An entry read before a park is not forgotten."""
    from shared.adapters.dynamo import ParkQueueItem
    from shared.adapters.objects import ObjectRepository
    from shared.services.sweeps import retry_sweep

    _tenant("flooded", "realm-1")
    _tenant("quiet", "realm-2")
    _connect("realm-1")
    items = [_dirty("flooded", n) for n in range(5)]
    handler.lambda_handler(_records([*items, _dirty("quiet", 0)]), lambda_context())
    created = ParkQueueItem.get("PARKQUEUES", "realm-1")
    assert created.moved_at and created.parked_at  # 3 parked, 2 of them handed back at once

    time.sleep(1.1)
    ObjectRepository.queue_moved("realm-1", released=False, parked=True)  # another invocation parked some
    later = ParkQueueItem.get("PARKQUEUES", "realm-1")
    assert later.moved_at == created.moved_at and later.parked_at > created.parked_at
    assert not ObjectRepository.forget_queue(created)  # it took objects since it was read

    at = datetime.fromtimestamp(later.moved_at + 61, UTC)  # 60 s (the default stall) after the last park
    assert retry_sweep(now=at)["queued"] == 1
    assert ParkQueueItem.get("PARKQUEUES", "realm-1").moved_at > later.moved_at


def test_stale_events_are_no_records_to_come_so_the_queue_is_handed_back_a_full_share(handler: Any) -> None:
    """The hand-back gives a share less the records this invocation's events sent to the stream; a stale event
    (an older version, a duplicate delivery) sent none, so it must not shrink the hand-back (the queue's chain
    would end with objects in it)."""
    from shared.adapters.objects import ObjectRepository

    _tenant("flooded", "realm-1")
    _tenant("quiet", "realm-2")
    for n in range(3):
        _dirty("flooded", n)
        assert ObjectRepository.park("flooded", f"appointment:a{n}", "realm-1", ttl_s=600)
    for n in (5, 6):
        _dirty("flooded", n)  # at version 1 already: version 1 again is stale
    events = [_event("flooded", 5), _event("flooded", 6), _event("quiet", 0)]
    handler.lambda_handler(_records(events), lambda_context())
    assert [EventItem.get(f"EVT#flooded#e{n}-1", "EVT").outcome for n in (5, 6)] == ["stale"] * 2
    assert sum(_state("flooded", n).lease_until is None for n in range(3)) == 2  # a full share of 2


def _event(tenant_id: str, n: int, version: int = 1) -> EventItem:
    item: EventItem = event_row(tenant_id, n, version)
    item.save()
    return item


# 5 events go one write each; from SyncService's TRANSACT_MIN (10) objects they go in transactions, same outcome.
@pytest.mark.parametrize("flood", [5, 14])
def test_a_contended_realms_events_past_its_share_park_their_objects_in_the_same_write(
    handler: Any, flood: int
) -> None:
    _tenant("flooded", "realm-1")
    _tenant("quiet", "realm-2")
    events = [_event("flooded", n) for n in range(flood)] + [_event("quiet", 0)]
    handler.lambda_handler(_records(events), lambda_context())

    objs = [_state("flooded", n) for n in range(flood)]
    assert all(o.dirty and o.desired_version == 1 and o.desired["v"] == 1 for o in objs)  # every event applied
    outcomes = [EventItem.get(f"EVT#flooded#e{n}-1", "EVT").outcome for n in range(flood)]
    assert outcomes == ["applied"] * flood
    # Two (its share) were applied for the stream to deliver; the rest joined the realm's queue in the same write.
    # Those two are the realm's share of records to come, so the invocation handed none back from the queue.
    # (A contended realm over its share is not reconciled in the invocation that applied its events.)
    delivered = [o for o in objs if o.lease_until is None]
    parked = [o for o in objs if o.lease_until is not None]
    assert len(delivered) == 2 and len(parked) == flood - 2
    assert all(o.lease_owner == "parked" and o.gsi2pk == "PARK#realm-1" for o in parked)
    quiet = _state("quiet", 0)  # a light realm: reconciled where its event was applied
    assert (quiet.status, quiet.dirty, quiet.lease_until) == ("skipped", False, None)

    # A newer event for a parked object is applied where it waits (the queue's lease stays on it). It was one
    # record of the realm's in this invocation, so the hand-back releases one more from the queue.
    n = int(parked[-1].object_key.rsplit("a", 1)[1])
    handler.lambda_handler(_records([_event("flooded", n, version=2), _event("quiet", 1)]), lambda_context())
    again = _state("flooded", n)
    assert again.desired_version == 2 and again.dirty
    after = [_state("flooded", m) for m in range(flood)]
    assert sum(o.lease_until is None for o in after) == 3
    assert all(o.gsi2pk is None for o in after if o.lease_until is None)


def test_a_light_realm_is_reconciled_where_its_events_were_applied_and_a_flooded_one_is_not(handler: Any) -> None:
    """All realms are contended, but a realm whose records in the invocation are within its share has its objects
    reconciled in the invocation that applied its events: they do not wait for their records to come back behind a
    flooded realm's. A realm that had more than its share lately keeps to the stream, even in an invocation where it
    has few records (its writes wait on its own pacing and would hold the invocation)."""
    _tenant("flooded", "realm-1")
    _tenant("quiet", "realm-2")
    first = [_event("flooded", n) for n in range(5)] + [_event("quiet", n) for n in range(2)]
    assert handler.lambda_handler(_records(first), lambda_context()) == {"batchItemFailures": []}
    assert [(_state("quiet", n).status, _state("quiet", n).dirty) for n in range(2)] == [("skipped", False)] * 2
    assert all(_state("flooded", n).dirty for n in range(5))

    later = [_event("flooded", 9), _event("quiet", 2)]
    assert handler.lambda_handler(_records(later), lambda_context()) == {"batchItemFailures": []}
    fresh = _state("flooded", 9)
    assert (fresh.dirty, fresh.lease_until, fresh.status) == (True, None, "pending")  # for the stream to deliver
    assert _state("quiet", 2).status == "skipped"


def test_shares_tell_light_realms_from_flooded_ones(handler: Any) -> None:
    shares = handler.RealmShares()
    shares.begin(Counter({"light": 2, "flooded": 5}))  # share 2
    assert [shares.admit("light") for _ in range(3)] == [True, True, False]
    assert shares.light("light") and shares.inline("light")
    assert shares.follows("light")  # its waiting objects follow past the share
    assert not shares.light("flooded") and not shares.inline("flooded")
    assert [shares.follows("flooded") for _ in range(3)] == [True, True, False]
    shares.begin(Counter({"light": 1, "flooded": 1}))  # flooded lately: still not light
    assert shares.inline("light") and not shares.inline("flooded")
    shares.begin(Counter({"light": 1}))
    shares.parked("light")  # a realm that parks is not light either
    assert not shares.light("light")


def test_an_events_object_is_reconciled_in_the_invocation_that_applied_it_and_its_record_costs_nothing(
    handler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The object an event of a realm alone makes dirty is reconciled straight away, not when the apply's stream
    record comes back in a later invocation. That record, when it comes, shows the row the reconcile claimed: it
    is skipped without a write. A later change to the object (a wake-up) is a record like any other."""
    from shared.adapters.objects import ObjectRepository
    from shared.services.sync import SyncService

    _tenant("solo", "realm-1")
    applied: list[ObjectItem] = []  # the rows as the apply left them: what its stream records show
    reconcile = SyncService.reconcile

    def snapshot(self: SyncService, tenant_id: str, object_key: str, **kw: Any) -> Any:
        applied.append(ObjectItem.get(object_pk(tenant_id, object_key), "OBJ"))
        return reconcile(self, tenant_id, object_key, **kw)

    monkeypatch.setattr(SyncService, "reconcile", snapshot)
    events = [_event("solo", n) for n in range(3)]
    assert handler.lambda_handler(_records(events), lambda_context()) == {"batchItemFailures": []}
    assert sorted(o.object_key for o in applied) == [f"appointment:a{n}" for n in range(3)]
    assert all(not _state("solo", n).dirty and _state("solo", n).status == "skipped" for n in range(3))

    claims: list[str] = []
    claim = ObjectRepository.claim

    def counted(self: ObjectRepository, tenant_id: str, object_key: str, *a: Any, **kw: Any) -> Any:
        claims.append(object_key)
        return claim(self, tenant_id, object_key, *a, **kw)

    monkeypatch.setattr(ObjectRepository, "claim", counted)
    assert all(o.dirty and o.lease_until is None for o in applied)  # records the stream delivers
    assert handler.lambda_handler(_records(applied), lambda_context()) == {"batchItemFailures": []}
    assert claims == []

    woken = _state("solo", 1)
    assert ObjectRepository.touch_item(woken, reason="appointment:a9 synced")
    assert handler.lambda_handler(_records([*applied, _state("solo", 1)]), lambda_context()) == {
        "batchItemFailures": []
    }
    assert claims == ["appointment:a1"]
    assert not _state("solo", 1).dirty


def test_realms_with_fewer_records_are_started_first(handler: Any) -> None:
    """The pool starts records in the order given: a flooded realm's records, paced by QBO, must not take the
    threads ahead of the other realms' records. Each realm keeps its records in stream order."""
    _tenant("flooded", "realm-1")
    _tenant("quiet", "realm-2")
    _tenant("calm", "realm-3")
    items = [*[_dirty("flooded", n) for n in range(3)], _dirty("quiet", 0), _dirty("calm", 0), _dirty("flooded", 3)]
    items.insert(4, _dirty("quiet", 1))
    ordered = handler.fair_order(_records(items)["Records"])
    keys = [
        (r["dynamodb"]["NewImage"]["tenant_id"]["S"], r["dynamodb"]["NewImage"]["object_key"]["S"]) for r in ordered
    ]
    assert keys == [
        ("calm", "appointment:a0"),
        ("quiet", "appointment:a0"),
        ("quiet", "appointment:a1"),
        *[("flooded", f"appointment:a{n}") for n in range(4)],
    ]


def test_when_applying_together_fails_each_record_applies_its_own_event(
    handler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.services.sync import SyncService

    def broken(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("DynamoDB hiccup")

    monkeypatch.setattr(SyncService, "apply_events", broken)
    _tenant("solo", "realm-1")
    events = [_event("solo", n) for n in range(12)]
    assert handler.lambda_handler(_records(events), lambda_context()) == {"batchItemFailures": []}
    assert all(_state("solo", n).desired_version == 1 for n in range(12))
    assert [EventItem.get(f"EVT#solo#e{n}-1", "EVT").outcome for n in range(12)] == ["applied"] * 12
