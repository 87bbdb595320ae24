"""The QBO API surface the sync engine uses (implemented by ``shared.adapters.qbo.client.QboClient``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from shared.adapters.qbo.faults import QboFault

Operation = Literal["create", "update", "delete", "void", "query"]
# QBO's largest MAXRESULTS: a query returns at most this many rows a page (qbo-api.md, query paging).
PAGE_SIZE = 1000


@dataclass(frozen=True)
class BatchOp:
    """One item of a /batch call. ``entity`` is the QBO type name (``Invoice``); ``body`` the entity JSON
    (for query: ``body = {"query": "select ..."}``). ``bid`` must be unique within the call (≤ 10 chars)."""

    bid: str
    operation: Operation
    entity: str
    body: dict[str, Any]


@dataclass
class BatchResult:
    bid: str
    entity: dict[str, Any] | None = None  # created/updated/deleted entity (or None)
    rows: list[dict[str, Any]] = field(default_factory=list)  # query results
    fault: QboFault | None = None


@dataclass
class CallStats:
    reads: int = 0  # GET by id, query, cdc: metered ("CorePlus")
    writes: int = 0  # create/update/delete/void ("Core")
    batches: int = 0
    batch_items: int = 0
    http_calls: int = 0
    throttled: int = 0
    retries_401: int = 0
    batch_started_at: float = 0.0  # time.monotonic() when the latest /batch call left, after the realm's pacing


class QboApi(Protocol):
    realm_id: str
    stats: CallStats

    def create(self, entity: str, body: dict[str, Any], *, request_id: str) -> dict[str, Any]: ...

    def update(self, entity: str, body: dict[str, Any], *, request_id: str, sparse: bool = True) -> dict[str, Any]: ...

    def delete(self, entity: str, qbo_id: str, sync_token: str, *, request_id: str) -> dict[str, Any]: ...

    def void(self, entity: str, qbo_id: str, sync_token: str, *, request_id: str) -> dict[str, Any]: ...

    def read(self, entity: str, qbo_id: str) -> dict[str, Any]: ...

    def query(self, statement: str, *, max_pages: int = 10, start: int = 1) -> list[dict[str, Any]]: ...

    def batch(self, ops: list[BatchOp], *, request_id: str | None = None) -> list[BatchResult]: ...

    def cdc(self, entities: list[str], changed_since: datetime) -> dict[str, list[dict[str, Any]]]: ...

    def company_info(self) -> dict[str, Any]: ...

    def preferences(self) -> dict[str, Any]: ...
