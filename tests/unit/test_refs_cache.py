"""The reference-list cache: one /batch per realm however many threads start cold together (each batch call is
one of the realm's 40 a minute)."""

from __future__ import annotations

import threading
import time
from typing import Any

from shared.adapters.qbo.types import BatchOp, BatchResult
from shared.adapters.refs import LISTS, RefCache


class ListsClient:
    realm_id = "realm-1"

    def __init__(self) -> None:
        self.batches = 0
        self._lock = threading.Lock()

    def batch(self, ops: list[BatchOp], **_: Any) -> list[BatchResult]:
        with self._lock:
            self.batches += 1
        time.sleep(0.05)  # a real call takes a while: the other threads arrive meanwhile
        rows = {"Item": [{"Id": "1", "Name": "97110 PT"}]}
        return [BatchResult(bid=op.bid, rows=rows.get(op.entity, [])) for op in ops]


def lookup_from_threads(cache: RefCache, client: ListsClient, name: str, n: int = 20) -> list[Any]:
    found: list[Any] = [None] * n
    together = threading.Barrier(n)

    def look(i: int) -> None:
        together.wait(timeout=10)
        found[i] = cache.lookup(client, "Item", name)  # type: ignore[arg-type]

    threads = [threading.Thread(target=look, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    return found


def test_threads_starting_cold_load_the_lists_once(moto_aws: dict[str, str]) -> None:
    client, cache = ListsClient(), RefCache()

    found = lookup_from_threads(cache, client, "97110 PT")

    assert client.batches == 1
    assert all(row and row["Id"] == "1" for row in found)


def test_one_batch_carries_every_list(moto_aws: dict[str, str]) -> None:
    calls: list[list[BatchOp]] = []
    client = ListsClient()
    original = client.batch
    client.batch = lambda ops, **kw: calls.append(ops) or original(ops, **kw)  # type: ignore[method-assign]
    RefCache().lookup(client, "Item", "97110 PT")  # type: ignore[arg-type]
    assert [[op.entity for op in ops] for ops in calls] == [list(LISTS)]


def test_a_miss_refreshes_once_for_all_threads(moto_aws: dict[str, str]) -> None:
    client, cache = ListsClient(), RefCache(min_refresh_s=1.0)
    cache.lookup(client, "Item", "97110 PT")  # type: ignore[arg-type]
    cache._snapshots["realm-1"].loaded_at -= 5  # loaded a while ago: a miss may refresh

    found = lookup_from_threads(cache, client, "no such item")

    assert client.batches == 2  # the first load and one shared refresh
    assert found == [None] * 20
