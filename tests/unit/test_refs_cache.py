"""The reference-list cache: one /batch per realm however many threads start cold together (each batch call is
one of the realm's 40 a minute)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from shared.adapters import refs
from shared.adapters.dynamo import RefItem
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


class LongListClient(ListsClient):
    """A lab's company: 2,345 items. A query answers at most 1,000 rows a page, as QBO does."""

    ITEMS = [{"Id": str(i), "Name": f"CPT {i:05d}", "Active": True} for i in range(1, 2346)]

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[tuple[str, int]] = []

    def batch(self, ops: list[BatchOp], **_: Any) -> list[BatchResult]:
        return [BatchResult(bid=op.bid, rows=self._page(op.entity, op.body["query"])) for op in ops]

    def query(self, statement: str, *, max_pages: int = 10, start: int = 1) -> list[dict[str, Any]]:
        """``QboClient.query``'s contract: the rows from ``start`` on, in pages (tests/unit/test_qbo_client.py)."""
        self.queries.append((statement, start))
        rows = self.ITEMS if statement.split()[3] == "Item" else []
        return rows[start - 1 : start - 1 + max_pages * 1000]

    def _page(self, entity: str, statement: str) -> list[dict[str, Any]]:
        """A batch's query: the first ``maxresults`` rows."""
        words = statement.lower().split()
        size = int(words[words.index("maxresults") + 1])
        assert size <= 1000
        rows = self.ITEMS if entity == "Item" else []
        return rows[:size]


def test_a_list_longer_than_a_query_page_is_paged_to_its_end(moto_aws: dict[str, str]) -> None:
    client, cache = LongListClient(), RefCache()

    assert cache.lookup(client, "Item", "CPT 02345") == {"Id": "2345", "Name": "CPT 02345", "Active": True}  # type: ignore[arg-type]
    assert cache.lookup(client, "Item", "CPT 01001") is not None  # type: ignore[arg-type]
    assert client.queries == [("select * from Item", 1001)]  # the batch's first page, then the rest paged
    # the short lists came whole in the batch
    assert len(cache.rows(client, "Item")) == 2345  # type: ignore[arg-type]


def test_lists_too_large_for_one_ledger_item_stay_in_the_container(
    moto_aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(refs, "STORED_MAX_BYTES", 50_000)  # 2,345 items take about 100 KB
    client, cache = LongListClient(), RefCache()

    assert cache.lookup(client, "Item", "CPT 02000") is not None  # type: ignore[arg-type]
    with pytest.raises(RefItem.DoesNotExist):
        RefItem.get("REALM#realm-1", "REF#SNAPSHOT")
    # Small enough, the snapshot is shared through the ledger.
    monkeypatch.setattr(refs, "STORED_MAX_BYTES", 380_000)
    RefCache().refresh(client)  # type: ignore[arg-type]
    assert len(RefItem.get("REALM#realm-1", "REF#SNAPSHOT").data["by_id"]["Item"]) == 2345
