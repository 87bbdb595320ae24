"""Per-realm cache of QBO list entries (items, classes, departments, payment methods, accounts, tax codes).

One ``/batch`` of queries loads every list at once (one metered call per realm per refresh); a list longer than
QBO's page of 1,000 rows (a lab's item list, a large chart of accounts) is paged on with single queries. The
snapshot is kept in memory per container and in the ledger (RefItem) so other containers start warm, unless it
would not fit one item: then each container loads its own. A lookup miss refreshes once (at most every
``min_refresh_s``) before a missing mapping is reported, so an item created in QBO after the last load is found
without a restart.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from shared.adapters.dynamo import RefItem, bind_table
from shared.adapters.objects import now_iso
from shared.adapters.qbo.types import PAGE_SIZE, BatchOp, QboApi
from shared.observability import count, logger

LISTS = ("Item", "Class", "Department", "PaymentMethod", "Account", "TaxCode")
# DynamoDB's item limit is 400 KB; the rest of the item and its attribute names need a little of it.
STORED_MAX_BYTES = 380_000
# Pages of a long list after the batch's first (1,000 rows each): beyond 100,000 rows the query logs that it
# stopped, and entries past it are reported unmapped.
MAX_PAGES = 99


@dataclass
class Snapshot:
    by_name: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # entity -> name -> row
    by_id: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    loaded_at: float = 0.0


class RefCache:
    def __init__(self, min_refresh_s: float = 60.0, max_age_s: float = 3600.0) -> None:
        bind_table()
        self._snapshots: dict[str, Snapshot] = {}
        self.min_refresh_s = min_refresh_s
        self.max_age_s = max_age_s
        self.loads = 0
        # Single flight per realm: a worker's threads starting together must not each spend a batch call
        # (a slot of the realm's 40/min) on the same lists.
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _lock(self, realm_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(realm_id, threading.Lock())

    def lookup(self, client: QboApi, entity: str, ref: str) -> dict[str, Any] | None:
        """The active list entry named ``ref`` (or with Id ``ref``), or None after one refresh."""
        snap = self._snapshot(client)
        row = _find(snap, entity, ref)
        if row is None and time.time() - snap.loaded_at > self.min_refresh_s:
            with self._lock(client.realm_id):
                current = self._snapshots.get(client.realm_id, snap)
                if current is snap or time.time() - current.loaded_at > self.min_refresh_s:
                    current = self.refresh(client)  # nobody refreshed while we waited
                snap = current
            row = _find(snap, entity, ref)
        return row

    def rows(self, client: QboApi, entity: str) -> list[dict[str, Any]]:
        return list(self._snapshot(client).by_id.get(entity, {}).values())

    def remember(self, realm_id: str, entity: str, row: dict[str, Any]) -> None:
        """Add an entry qbsync just created (write responses are reused, never re-read)."""
        snap = self._snapshots.setdefault(realm_id, Snapshot(loaded_at=time.time()))
        _index(snap, entity, row)

    def _snapshot(self, client: QboApi) -> Snapshot:
        snap = self._snapshots.get(client.realm_id)
        if snap is not None and time.time() - snap.loaded_at < self.max_age_s:
            return snap
        with self._lock(client.realm_id):
            snap = self._snapshots.get(client.realm_id)  # loaded by another thread while we waited?
            if snap is not None and time.time() - snap.loaded_at < self.max_age_s:
                return snap
            return self._load(client)

    def _load(self, client: QboApi) -> Snapshot:
        stored = self._load_stored(client.realm_id)
        if stored is not None and time.time() - stored.loaded_at < self.max_age_s:
            self._snapshots[client.realm_id] = stored
            return stored
        return self.refresh(client)

    def refresh(self, client: QboApi) -> Snapshot:
        """Load every list in one /batch call (and single queries for pages past a list's first) and store the
        snapshot for other containers."""
        ops = [
            BatchOp(
                bid=f"q{i}", operation="query", entity=e, body={"query": f"select * from {e} maxresults {PAGE_SIZE}"}
            )
            for i, e in enumerate(LISTS)
        ]
        results = client.batch(ops)
        snap = Snapshot(loaded_at=time.time())
        for entity, res in zip(LISTS, results, strict=True):
            if res.fault is not None:
                raise res.fault
            rows = list(res.rows)
            if len(rows) >= PAGE_SIZE:  # a full page: more may follow (qbo-api.md, query paging)
                rows += client.query(f"select * from {entity}", start=len(rows) + 1, max_pages=MAX_PAGES)
            for row in rows:
                _index(snap, entity, row)
        self._snapshots[client.realm_id] = snap
        self.loads += 1
        self._store(client.realm_id, snap)
        return snap

    @staticmethod
    def _store(realm_id: str, snap: Snapshot) -> None:
        data = {"by_id": snap.by_id, "loaded_at": snap.loaded_at}
        size = len(json.dumps(data, separators=(",", ":")).encode())
        if size > STORED_MAX_BYTES:
            # Kept in this container only: the lists are loaded again by each new container (one refresh each).
            logger().warning("reference lists too large to share", extra={"realm_id": realm_id, "bytes": size})
            count("RefSnapshotNotStored")
            return
        RefItem(
            f"REALM#{realm_id}",
            "REF#SNAPSHOT",
            rtype="ref",
            entity="*",
            key="snapshot",
            qbo_id="-",
            data=data,
            fetched_at=now_iso(),
        ).save()

    def _load_stored(self, realm_id: str) -> Snapshot | None:
        try:
            item = RefItem.get(f"REALM#{realm_id}", "REF#SNAPSHOT")
        except RefItem.DoesNotExist:
            return None
        snap = Snapshot(loaded_at=float(item.data.get("loaded_at", 0)))
        for entity, rows in item.data.get("by_id", {}).items():
            for row in rows.values():
                _index(snap, entity, row)
        return snap

    def invalidate(self, realm_id: str) -> None:
        self._snapshots.pop(realm_id, None)


_KEEP = ("Id", "Name", "FullyQualifiedName", "Active", "AccountType", "AccountSubType", "Type", "SyncToken")


def _index(snap: Snapshot, entity: str, full_row: dict[str, Any]) -> None:
    # Keep only what lookups need: the snapshot is stored in one ledger item (400 KB limit).
    row = {k: full_row[k] for k in _KEEP if k in full_row}
    name = str(row.get("FullyQualifiedName") or row.get("Name") or "")
    snap.by_id.setdefault(entity, {})[str(row["Id"])] = row
    if name:
        snap.by_name.setdefault(entity, {})[name.casefold()] = row
    if row.get("Name"):
        snap.by_name.setdefault(entity, {}).setdefault(str(row["Name"]).casefold(), row)


def _find(snap: Snapshot, entity: str, ref: str) -> dict[str, Any] | None:
    row = snap.by_name.get(entity, {}).get(ref.casefold()) or snap.by_id.get(entity, {}).get(ref)
    if row is None or row.get("Active") is False:
        return None
    return row


def escape_query_value(value: str) -> str:
    """A string literal for QBO's query language: backslash-escape backslashes and apostrophes."""
    return value.replace("\\", "\\\\").replace("'", "\\'")
