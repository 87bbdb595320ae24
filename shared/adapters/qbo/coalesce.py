"""Write coalescing: many concurrent reconciles of one realm share ``/batch`` calls.

Each reconcile keeps its own exactly-once logic (intent, requestid, read-back) and calls ``create`` /
``update`` / ``delete`` / ``void`` as usual; ``CoalescingClient`` queues the write and blocks the caller until
the write's batch returns. A batch is sent when every running worker of its realm is waiting on one (nothing more
can come), when ``max_items`` writes are queued, or after ``linger_s`` (after up to one batch interval while
enough of the realm's workers are still running or expected to fill it). A few writes that nothing can join
before the batch budget refills go at once as single calls instead (``alone_max``). One batch call then carries up
to 30 writes, which
is how qbsync gets near QBO's per-realm ceiling (40 batch calls/min) while spending a fraction of the calls.

QBO runs batch items one after another but an item cannot see what an earlier item of the same batch created;
that is safe here because a worker submits its next write only after the previous one returned.

Reads (read-back queries, reads by Id, CDC) are not coalesced: they are rare (only after an uncertain outcome
or a stale SyncToken) and must see the latest state.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from typing import Any

from shared.adapters.qbo.faults import QboFault, QboRetryable
from shared.adapters.qbo.types import BatchOp, BatchResult, CallStats, Operation, QboApi


@dataclass
class _Pending:
    op: BatchOp
    request_id: str
    done: threading.Event = field(default_factory=threading.Event)
    result: BatchResult | None = None
    error: QboFault | None = None


class Workers:
    """The container's concurrent reconciles, counted per realm and shared by every realm's coalescer.

    * *running*: workers inside ``worker()`` that are not waiting on a batch. When none of a realm's are, nothing
      more can arrive for its coalescer, so its queue is sent at once (no linger delay).
    * *expected*: records of the invocation handed to the pool and not started yet (``expect``). With the running
      ones they tell a coalescer whether enough writes are still coming to fill its batch, worth waiting for.

    Counts are per realm, so one realm's busy workers never hold up another realm's batch; a worker of no known
    realm (``None``) counts for every realm."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self._running: Counter[str | None] = Counter()
        self._expected: Counter[str | None] = Counter()

    def running(self, realm: str) -> int:
        """Call with ``cond`` held."""
        return self._running[realm] + self._running[None]

    def coming(self, realm: str) -> int:
        """Running or expected workers of the realm: the writes that may still join its queue. Call with ``cond``
        held."""
        return self.running(realm) + self._expected[realm] + self._expected[None]

    def expect(self, realms: Iterable[str | None]) -> None:
        """Records about to be handed to the pool, one realm per record."""
        with self.cond:
            self._expected.update(realms)

    def forget_expected(self) -> None:
        """The invocation ended: records never started are not coming."""
        with self.cond:
            self._expected.clear()
            self.cond.notify_all()

    @contextlib.contextmanager
    def worker(self, realm: str | None = None) -> Iterator[None]:
        """Wrap each concurrent reconcile (an expected one of ``realm`` starts)."""
        with self.cond:
            self._running[realm] += 1
            if self._expected[realm] > 0:
                self._expected[realm] -= 1
        try:
            yield
        finally:
            self._add(realm, -1)

    @contextlib.contextmanager
    def waiting(self, realm: str) -> Iterator[None]:
        """A worker of ``realm`` waits on its batch (call with ``cond`` held)."""
        self._running[realm] -= 1
        self.cond.notify_all()
        try:
            yield
        finally:
            self._running[realm] += 1

    @contextlib.contextmanager
    def fan_out(self, n: int, realm: str | None = None) -> Iterator[Callable[[], None]]:
        """A worker hands its work to ``n`` helper threads and waits on them (one object's independent writes).
        The helpers count as running from the start, so no batch is sent early while they start up; each calls
        the ``done`` yielded here when it ends."""
        self._add(realm, n - 1)
        try:
            yield lambda: self._add(realm, -1)
        finally:
            self._add(realm, 1)

    def _add(self, realm: str | None, n: int) -> None:
        with self.cond:
            self._running[realm] += n
            self.cond.notify_all()


class CoalescingClient:
    """A ``QboApi`` over another one (the realm's ``QboClient``) that coalesces writes into ``/batch``."""

    def __init__(
        self,
        inner: QboApi,
        *,
        workers: Workers | None = None,
        max_items: int = 30,
        linger_s: float = 0.05,
        min_interval_s: float = 0.0,
        alone_max: int = 0,
    ) -> None:
        """``min_interval_s``: the realm's batch budget as a spacing (60 / batch calls per minute). A batch is
        not sent sooner than that after the previous one unless it is full: while the budget refills, writes
        keep accumulating, so each batch call carries as many as it can.

        ``alone_max``: when no more than this many writes wait for the batch budget to refill and none of the
        realm's workers can add to them (an invocation's last copays, a quiet realm's second write), each goes
        at once as a single call on the realm's request budget (its own, larger one) instead of waiting up to a
        batch interval to spend a batch call on a few items."""
        self.inner = inner
        self.realm_id = inner.realm_id
        self.max_items = max_items
        self.linger_s = linger_s
        self.min_interval_s = min_interval_s
        self.alone_max = alone_max
        self._last_flush = 0.0
        self.workers = workers or Workers()
        self._cond = self.workers.cond
        self._queue: list[_Pending] = []
        self._flushing = False
        self._seq = 0
        self.batches_sent = 0
        self.singles_sent = 0
        self.stats: CallStats = inner.stats  # the same counters: calls are made by the inner client

    def worker(self) -> contextlib.AbstractContextManager[None]:
        return self.workers.worker(self.realm_id)

    # ------------------------------------------------------------------ writes (coalesced)
    def create(self, entity: str, body: dict[str, Any], *, request_id: str) -> dict[str, Any]:
        alone = partial(self.inner.create, entity, body, request_id=request_id)
        return self._submit("create", entity, body, request_id, alone)

    def update(self, entity: str, body: dict[str, Any], *, request_id: str, sparse: bool = True) -> dict[str, Any]:
        alone = partial(self.inner.update, entity, body, request_id=request_id, sparse=sparse)
        return self._submit("update", entity, {**body, "sparse": sparse}, request_id, alone)

    def delete(self, entity: str, qbo_id: str, sync_token: str, *, request_id: str) -> dict[str, Any]:
        alone = partial(self.inner.delete, entity, qbo_id, sync_token, request_id=request_id)
        return self._submit("delete", entity, {"Id": qbo_id, "SyncToken": sync_token}, request_id, alone)

    def void(self, entity: str, qbo_id: str, sync_token: str, *, request_id: str) -> dict[str, Any]:
        alone = partial(self.inner.void, entity, qbo_id, sync_token, request_id=request_id)
        if entity.lower() not in ("invoice", "payment", "salesreceipt"):
            return alone()  # raises the right fault
        body = {"Id": qbo_id, "SyncToken": sync_token, "sparse": True}
        return self._submit("void", entity, body, request_id, alone)

    # ------------------------------------------------------------------ reads (direct)
    def read(self, entity: str, qbo_id: str) -> dict[str, Any]:
        return self.inner.read(entity, qbo_id)

    def query(self, statement: str, *, max_pages: int = 10, start: int = 1) -> list[dict[str, Any]]:
        return self.inner.query(statement, max_pages=max_pages, start=start)

    def batch(self, ops: list[BatchOp], *, request_id: str | None = None) -> list[BatchResult]:
        return self.inner.batch(ops, request_id=request_id)

    def cdc(self, entities: list[str], changed_since: datetime) -> dict[str, list[dict[str, Any]]]:
        return self.inner.cdc(entities, changed_since)

    def company_info(self) -> dict[str, Any]:
        return self.inner.company_info()

    def preferences(self) -> dict[str, Any]:
        return self.inner.preferences()

    # ------------------------------------------------------------------ machinery
    def _submit(
        self,
        operation: Operation,
        entity: str,
        body: dict[str, Any],
        request_id: str,
        alone: Callable[[], dict[str, Any]],
    ) -> dict[str, Any]:
        with self._cond:
            op = BatchOp(bid=_bid(request_id), operation=operation, entity=entity, body=body)
            pending = _Pending(op, request_id)
            self._queue.append(pending)
            arrived = time.monotonic()
            with self.workers.waiting(self.realm_id):
                while not pending.done.is_set():
                    now = time.monotonic()
                    # While enough of the realm's workers are still coming to fill the batch, wait for them up to
                    # one batch interval: a batch sent almost empty would spend a call of the realm's budget for
                    # one or two writes.
                    filling = self.workers.coming(self.realm_id) >= self.max_items - len(self._queue)
                    deadline = arrived + (max(self.linger_s, self.min_interval_s) if filling else self.linger_s)
                    spaced = now - self._spent_at() >= self.min_interval_s
                    ready = len(self._queue) >= self.max_items or (
                        spaced and (self.workers.running(self.realm_id) <= 0 or now >= deadline)
                    )
                    if ready and not self._flushing and self._queue:
                        self._flush_locked()
                        continue
                    if self._goes_alone(pending, spaced):
                        self._queue.remove(pending)
                        self.singles_sent += 1
                        break
                    wake = max(deadline, self._spent_at() + self.min_interval_s) - now
                    self._cond.wait(timeout=min(max(wake, 0.005), 0.25))
        if not pending.done.is_set():  # left the queue to go alone
            return alone()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        if pending.result.fault is not None:
            raise pending.result.fault
        return pending.result.entity or {}

    def _spent_at(self) -> float:
        """When the realm's batch budget was last spent: this coalescer's last batch was formed, or the latest
        batch call left, after the realm's pacing (booked further ahead by another container's batch, or by a
        refs load). Counted from the forming alone, a write right after a batch that waited for its slot saw the
        budget refilled and took the next batch call, a whole interval later, instead of going alone."""
        return max(self._last_flush, self.stats.batch_started_at)

    def _goes_alone(self, pending: _Pending, spaced: bool) -> bool:
        """A queued write waiting for the batch budget to refill, among at most ``alone_max``, that none of the
        realm's workers can join (call with the lock held)."""
        return (
            not spaced
            and 0 < len(self._queue) <= self.alone_max
            and self.workers.coming(self.realm_id) <= 0
            and pending in self._queue  # not taken by the batch in flight
        )

    def _flush_locked(self) -> None:
        """Send up to ``max_items`` queued writes as one batch (the lock is released during the call)."""
        take, self._queue = self._queue[: self.max_items], self._queue[self.max_items :]
        bids: set[str] = set()
        for p in take:
            if p.op.bid in bids:  # two requestids with one hash prefix: this batch gets a unique bId
                self._seq += 1
                p.op = replace(p.op, bid=f"s{self._seq % 10**8}")
            bids.add(p.op.bid)
        self._flushing = True
        self._last_flush = time.monotonic()
        # One requestid per batch, derived from its items' own requestids (≤ 36 chars for QBO batches), in any
        # order: the same writes retried by threads that queue in another order are the same batch to QBO.
        digest = hashlib.sha256("|".join(sorted(p.request_id for p in take)).encode()).hexdigest()
        self._cond.release()
        try:
            try:
                results = self.inner.batch([p.op for p in take], request_id="qb" + digest[:34])
                by_bid = {r.bid: r for r in results}
                for p in take:
                    p.result = by_bid.get(p.op.bid) or BatchResult(
                        bid=p.op.bid, fault=QboRetryable("batch answer lacked this item", uncertain=True)
                    )
            except QboFault as fault:
                for p in take:
                    p.error = fault  # every item shares the batch's fate (uncertain ones are read back later)
            self.batches_sent += 1
        finally:
            self._cond.acquire()
            self._flushing = False
            for p in take:
                p.done.set()
            self._cond.notify_all()


def _bid(request_id: str) -> str:
    """A batch item's bId, derived from the write's own requestid. A retried batch carries the same items, so
    the same batch requestid, and QBO answers it with the first attempt's response: its bIds must be the
    ones this attempt sent (a per-call counter would find none of its items in the replayed answer)."""
    return "b" + hashlib.sha256(request_id.encode()).hexdigest()[:9]
