"""A stream batch's events applied together: the newest event of each object in transactions of up to 100 objects,
each keeping its own condition, with the same outcomes as applying them one at a time."""

from __future__ import annotations

from typing import Any

import pytest

from shared.adapters.dynamo import EventItem, ObjectItem
from shared.adapters.objects import Apply, ObjectRepository, object_pk
from shared.services.sync import TRANSACT_MIN, SyncService
from tests.builders import event_row

pytestmark = pytest.mark.integration


def _event(n: int, version: int = 1) -> EventItem:
    kind = "appointment.completed" if version > 1 else "appointment.booked"
    item: EventItem = event_row("t1", n, version, event_type=kind)
    return item


def _object(n: int, *, tenant: str = "t1") -> ObjectItem | None:
    try:
        return ObjectItem.get(object_pk(tenant, f"appointment:a{n}"), "OBJ")
    except ObjectItem.DoesNotExist:
        return None


@pytest.fixture
def service(moto_aws: dict[str, str]) -> SyncService:
    return SyncService(lambda *_a: None)  # type: ignore[arg-type,return-value]  # applying never calls QBO


def test_a_transaction_writes_every_event_or_none_and_says_which_refused(moto_aws: dict[str, str]) -> None:
    repo = ObjectRepository()
    repo.apply_event(_event(1, version=5), "active", "appointment")  # a newer version is already applied
    applies = [Apply(_event(n), "draft", "appointment") for n in range(3)]
    assert repo.apply_together(applies) == ["Cancelled", "ConditionalCheckFailed", "Cancelled"]
    assert _object(0) is None and _object(2) is None  # all or nothing
    assert int(_object(1).desired_version) == 5  # type: ignore[union-attr]

    parked = [Apply(_event(0), "draft", "appointment", ("realm-1", 600)), Apply(_event(2), "draft", "appointment")]
    assert repo.apply_together(parked) == [None, None]
    first, third = _object(0), _object(2)
    assert first is not None and first.lease_owner == "parked" and first.gsi2pk == "PARK#realm-1"
    assert (
        third is not None
        and third.dirty
        and third.lease_until is None
        and third.desired == {"appointment_id": "a2", "v": 1}
    )


def test_few_objects_are_left_to_their_records(service: SyncService) -> None:
    """A transactional write costs twice the write units of a plain one: a few events are applied one by one."""
    marks: list[EventItem] = []
    done: set[str] = set()
    service.apply_events([(_event(n), None) for n in range(TRANSACT_MIN - 1)], marks, done)
    assert done == set() and marks == [] and _object(0) is None


def test_a_batch_applies_together_with_the_outcomes_one_at_a_time_would_give(service: SyncService) -> None:
    service.objects.apply_event(_event(3, version=9), "active", "appointment")  # object 3 is ahead of the batch
    batch: list[tuple[EventItem, Any]] = [(_event(n), None) for n in range(12)]
    batch.append((_event(0, version=2), None))  # object 0's booked and completed in one batch
    batch.append((_event(5), ("realm-1", 600)))  # a second delivery of event e5-1, now over the realm's share
    calls: list[int] = []
    apply_together = service.objects.apply_together

    def counted(applies: list[Apply]) -> list[str | None]:
        calls.append(len(applies))
        return apply_together(applies)

    service.objects.apply_together = counted  # type: ignore[method-assign]
    marks: list[EventItem] = []
    done: set[str] = set()
    service.apply_events(batch, marks, done)

    # One transaction of the 12 objects' newest events; object 3's refused it, the other 11 went in a second.
    assert calls == [12, 11]
    outcomes = {m.event_id: m.outcome for m in marks}
    assert outcomes["e0-2"] == "applied" and outcomes["e0-1"] == "stale"  # older than what was applied: no write
    assert "e3-1" not in done and "e3-1" not in outcomes  # left to its record, which finds it stale
    assert len(done) == 12 and all(outcomes[e] == "applied" for e in done if e not in ("e0-1",))
    assert _object(0).desired == {"appointment_id": "a0", "v": 2}  # type: ignore[union-attr]
    assert int(_object(3).desired_version) == 9  # type: ignore[union-attr]
    assert all(_object(n).dirty for n in range(12))  # type: ignore[union-attr]
