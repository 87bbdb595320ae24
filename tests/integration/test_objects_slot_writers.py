"""Concurrent writers of one object's slots (a remittance's documents written at once) lose no record."""

from __future__ import annotations

from typing import Any

import pytest

from shared.adapters.dynamo import ObjectItem
from shared.adapters.objects import LeaseLost, ObjectRepository, slot_intents
from tests.concurrency import run_at_once

pytestmark = pytest.mark.integration
T = "clinic-1"
KEY = "remittance:era-1"


def _claimed(repo: ObjectRepository) -> ObjectItem:
    repo.ensure(T, KEY, "remittance")
    item = repo.claim(T, KEY)
    assert item is not None
    return item


def _errors(results: list[Any]) -> list[BaseException]:
    return [r for r in results if isinstance(r, BaseException)]


@pytest.mark.parametrize("one_write", [False, True], ids=["slot-then-intent", "slot-and-intent-in-one-write"])
def test_concurrent_writers_of_one_objects_slots_lose_no_record(moto_aws: dict[str, str], one_write: bool) -> None:
    repo = ObjectRepository()
    item = _claimed(repo)
    n = 25
    with repo.copies_for_writers(item, n) as copies:

        def write(i: int) -> None:
            slot, copy = f"payment:p{i}", copies[i]
            repo.record_intent(copy, slot, {"op": "create", "entity": "Payment"})
            repo.record_slot(copy, slot, {"type": "Payment", "id": str(i)}, clear_intent=one_write)
            assert copy.qbo[slot]["id"] == str(i), "a writer must see its own record"
            if one_write:
                assert slot not in slot_intents(copy), "the slot's intent went with its record"
            else:
                repo.record_intent(copy, slot, None)

        assert _errors(run_at_once(n, write)) == []
    stored = repo.get(T, KEY)
    assert stored is not None
    assert {s: v["id"] for s, v in stored.qbo.items()} == {f"payment:p{i}": str(i) for i in range(n)}
    assert stored.intent is None
    assert item.qbo == stored.qbo and item.intent is None  # the object handed out is current again


def test_intents_in_doubt_are_kept_per_slot_when_written_at_once(moto_aws: dict[str, str]) -> None:
    repo = ObjectRepository()
    item = _claimed(repo)
    n = 12
    with repo.copies_for_writers(item, n) as copies:
        assert _errors(run_at_once(n, lambda i: repo.record_intent(copies[i], f"payment:p{i}", {"op": "create"}))) == []
    stored = repo.get(T, KEY)
    assert stored is not None and sorted(stored.intent["slots"]) == sorted(f"payment:p{i}" for i in range(n))


def test_a_writer_whose_lease_moved_gets_lease_lost_and_writes_nothing(moto_aws: dict[str, str]) -> None:
    repo = ObjectRepository()
    item = _claimed(repo)
    with repo.copies_for_writers(item, 2) as copies:
        item.update(actions=[ObjectItem.lease_owner.set("another-worker")])  # the lease moved on
        with pytest.raises(LeaseLost):
            repo.record_slot(copies[0], "payment:p0", {"id": "1"})
    stored = repo.get(T, KEY)
    assert stored is not None and not stored.qbo
