"""Per-realm pacing of QBO calls, shared by every worker in every container.

QBO allows 500 requests/min, 10 in flight and 40 batch calls/min per realm (qbo-api.md §2). We prevent
throttling instead of retrying it: ``Pacer.acquire(kind)`` sleeps until a call may start.

Two layers:

* **Ledger table** (the truth, shared across containers), rows under ``pk REALM#{realm}``:
  - ``sk RATE`` / ``sk RATE#batch``: a GCRA rate limiter (a token bucket kept as one number).
    ``lock_until`` holds the bucket's "theoretical arrival time" (TAT): the bucket is booked until then.
    Booking one call is one conditional UpdateItem, no read-modify-write:
    idle bucket ``SET tat = now + T IF tat < now``, else ``SET tat = tat + T IF now <= tat <= now + tau``.
    With burst ``b`` and interval ``T = period / (limit - b)``, any window of ``period`` seconds holds at
    most ``limit`` starts.
  - ``sk RATE#batchlog``: the batch calls that may still count in QBO's window (``PaceLogItem``). Spacing alone
    assumes QBO counts each call when it leaves here; it counts it at some moment before the answer comes back,
    and how late varies from call to call. So a batch call also needs fewer than ``batch_per_period`` live
    entries in the log: a call is live while in flight and until ``period_s`` (plus ``skew_s`` for clocks) after
    it *ended*. Whatever moment between sending and answering QBO counts a call at, no window of ``period_s``
    then holds more than the limit. One conditional rewrite of the row books a call, one records its end.
  - ``sk LOCK#inflight#{n}`` for n < max_inflight: leased in-flight slots (conditional put
    ``IF not exists OR lock_until < now``; conditional delete by owner). A crashed worker's slot frees
    itself when its lease (the HTTP timeout plus a margin) runs out.
* **In process**: a per-realm semaphore (threads of one container queue locally instead of polling
  DynamoDB) and a per-(realm, bucket) lock so one thread at a time books the rate row.

Fairness: every lock, semaphore and row is per realm, and nothing is held across realms, so one
saturated realm never delays another's calls.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from pynamodb.exceptions import DeleteError, PutError, UpdateError

from shared.adapters import dynamo
from shared.adapters.dynamo import LockItem, PaceLogItem
from shared.adapters.qbo.faults import QboRetryable
from shared.config import Settings, get_settings
from shared.observability import logger

Kind = Literal["request", "batch"]
_CCF = "ConditionalCheckFailedException"


@dataclass(frozen=True)
class PaceLimits:
    """Budgets for one realm. ``period_s`` is 60 in production; tests shrink it to run fast."""

    rate_per_period: int
    max_inflight: int
    batch_per_period: int
    period_s: float = 60.0
    lease_s: float = 60.0
    # A batch call's end counts this much later in the log: containers' clocks differ by milliseconds, and QBO may
    # keep its window in whole seconds (its timestamps are).
    skew_s: float = 1.0

    @classmethod
    def from_settings(cls, s: Settings) -> PaceLimits:
        return cls(
            rate_per_period=s.qbo_rate_per_min,
            max_inflight=s.qbo_max_inflight,
            batch_per_period=s.qbo_batch_per_min,
            lease_s=s.qbo_timeout_s + 30.0,
        )

    def gcra(self, kind: Kind) -> tuple[float, float]:
        """(interval T, tolerance tau) such that no window of ``period_s`` holds more than the limit."""
        limit = max(1, self.rate_per_period if kind == "request" else self.batch_per_period)
        # Requests may burst (a tenth of the budget, at most the in-flight limit) for latency; batch calls
        # exist for throughput, so they are spaced evenly and the sustained rate keeps the whole budget.
        burst = 1 if kind == "batch" else max(1, min(limit // 10, self.max_inflight))
        # A closed window of period_s holds the burst plus floor(period_s / interval) spaced starts; the 0.1 %
        # margin makes that floor limit - burst (and absorbs clock rounding between containers).
        interval = self.period_s / (limit - burst + 1) * 1.001
        return interval, (burst - 1) * interval


class Booking(NamedTuple):
    """A ``PaceStore.take`` answer. Booked: the call starts ``wait_s`` from now (its booked start). Not booked:
    try again in ``wait_s``."""

    booked: bool
    wait_s: float


def _lapses_at(entry: float, window_s: float, lease_s: float) -> float:
    """When a batch-call log entry stops counting: ``window_s`` after the call ended (positive: the end), or, in
    flight (negative: the start, negated), ``lease_s`` + ``window_s`` after it started (a worker that died
    mid-call never records its end)."""
    return entry + window_s if entry > 0 else -entry + lease_s + window_s


def log_admit(
    calls: list[float], now: float, limit: int, window_s: float, lease_s: float
) -> tuple[list[float] | None, float]:
    """A batch-call log with a call starting ``now`` entered (lapsed entries dropped) while fewer than ``limit``
    entries count; else None and the seconds until one more lapses. The rule of every ``PaceStore.admit``."""
    alive = [c for c in calls if _lapses_at(c, window_s, lease_s) > now]
    if len(alive) < limit:
        return [*alive, -now], 0.0
    lapses = sorted(_lapses_at(c, window_s, lease_s) for c in alive)
    return None, max(0.001, lapses[len(alive) - limit] - now)


def log_end(calls: list[float], started: float, ended: float) -> list[float]:
    """A batch-call log with the call entered at ``started`` ended at ``ended``."""
    return [ended if c == -started else c for c in calls]


class PaceStore(Protocol):
    """Shared state of the pacer (DynamoDB in production; a fake in unit tests)."""

    def take(self, realm_id: str, bucket: Kind, now: float, interval: float, tolerance: float) -> Booking:
        """Book one call, starting now or at most ``interval`` ahead."""
        ...

    def claim_slot(self, realm_id: str, slots: int, owner: str, now: float, lease_s: float) -> int | None:
        """Claim a free (or expired) in-flight slot; None when all are held."""
        ...

    def release_slot(self, realm_id: str, slot: int, owner: str) -> None: ...

    def admit(self, realm_id: str, now: float, limit: int, window_s: float, lease_s: float) -> Booking:
        """Enter a batch call starting now in the realm's log (``log_admit``). Not booked: try again in
        ``wait_s``."""
        ...

    def done(self, realm_id: str, started: float, ended: float) -> None:
        """The batch call entered at ``started`` ended at ``ended``."""
        ...


class DynamoPaceStore:
    """PaceStore on the ledger table (LockItem rows under ``REALM#{realm}``)."""

    def __init__(self) -> None:
        dynamo.bind_table()

    @staticmethod
    def _rate_sk(bucket: Kind) -> str:
        return "RATE" if bucket == "request" else "RATE#batch"

    def take(self, realm_id: str, bucket: Kind, now: float, interval: float, tolerance: float) -> Booking:
        item = LockItem(f"REALM#{realm_id}", self._rate_sk(bucket))
        tat = LockItem.lock_until
        try:
            item.update(
                actions=[tat.set(now + interval), LockItem.rtype.set("rate")],
                condition=tat.does_not_exist() | (tat < now),
            )
            return Booking(True, 0.0)
        except UpdateError as exc:
            if exc.cause_response_code != _CCF:
                raise
        try:
            item.update(  # the update answers the new TAT: this call's start is the old one, less the burst
                actions=[tat.set(tat + interval)],
                condition=(tat >= now) & (tat <= now + tolerance + interval),
            )
            return Booking(True, max(0.0, float(item.lock_until or 0.0) - interval - tolerance - now))
        except UpdateError as exc:
            if exc.cause_response_code != _CCF:
                raise
        # Booked further ahead: read how far, to sleep just long enough (the read decides nothing).
        current = LockItem.get(item.pk, item.sk, consistent_read=True).lock_until or 0.0
        return Booking(False, max(0.001, float(current) - tolerance - interval - now))

    def claim_slot(self, realm_id: str, slots: int, owner: str, now: float, lease_s: float) -> int | None:
        pk = f"REALM#{realm_id}"
        held: set[int] = set()
        for row in LockItem.query(pk, LockItem.sk.startswith("LOCK#inflight#"), consistent_read=True):
            if (row.lock_until or 0) >= now:
                held.add(int(row.sk.rsplit("#", 1)[1]))
        free = [n for n in range(slots) if n not in held]
        random.shuffle(free)
        for n in free:
            slot = LockItem(
                pk,
                f"LOCK#inflight#{n}",
                rtype="lock",
                owner=owner,
                lock_until=now + lease_s,
                expires_at=int(now + lease_s + 86_400),
            )
            try:
                slot.save(condition=LockItem.pk.does_not_exist() | (LockItem.lock_until < now))
                return n
            except PutError as exc:
                if exc.cause_response_code != _CCF:
                    raise
        return None

    def release_slot(self, realm_id: str, slot: int, owner: str) -> None:
        try:
            LockItem(f"REALM#{realm_id}", f"LOCK#inflight#{slot}").delete(condition=LockItem.owner == owner)
        except DeleteError as exc:
            # Our lease ran out and another worker holds the slot now: it is theirs to release.
            if exc.cause_response_code != _CCF:
                raise

    def admit(self, realm_id: str, now: float, limit: int, window_s: float, lease_s: float) -> Booking:
        log = self._log(realm_id)
        entered, wait = log_admit(list(log.calls or []), now, limit, window_s, lease_s)
        if entered is None:
            return Booking(False, wait)
        return Booking(True, 0.0) if self._rewrite(log, entered) else Booking(False, 0.001)

    def done(self, realm_id: str, started: float, ended: float) -> None:
        for _ in range(5):  # another call booked or ended meanwhile: read again
            log = self._log(realm_id)
            calls = list(log.calls or [])
            if -started not in calls or self._rewrite(log, log_end(calls, started, ended)):
                return
        # Left in flight, the entry counts until its lease runs out: later, never too early.
        logger().warning("batch call end not recorded", extra={"realm_id": realm_id})

    @staticmethod
    def _log(realm_id: str) -> PaceLogItem:
        try:
            return PaceLogItem.get(f"REALM#{realm_id}", "RATE#batchlog", consistent_read=True)
        except PaceLogItem.DoesNotExist:
            return PaceLogItem(f"REALM#{realm_id}", "RATE#batchlog", rtype="rate", calls=[], ver=0)

    @staticmethod
    def _rewrite(log: PaceLogItem, calls: list[float]) -> bool:
        """Store ``calls`` if the row is as read (False: someone else rewrote it first)."""
        seen = int(log.ver or 0)
        log.calls, log.ver = calls, seen + 1
        try:
            log.save(condition=PaceLogItem.pk.does_not_exist() if seen == 0 else PaceLogItem.ver == seen)
            return True
        except PutError as exc:
            if exc.cause_response_code != _CCF:
                raise
            return False


class Pacer:
    """Paces one realm's calls. Share one instance per realm per container (``pacer_for``)."""

    def __init__(
        self,
        realm_id: str,
        *,
        limits: PaceLimits | None = None,
        store: PaceStore | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        max_wait_s: float | None = None,
    ) -> None:
        self.realm_id = realm_id
        self.limits = limits or PaceLimits.from_settings(get_settings())
        self._store = store or DynamoPaceStore()
        self._clock = clock
        self._sleep = sleep
        self._max_wait_s = max_wait_s
        self._local_slots = threading.BoundedSemaphore(self.limits.max_inflight)
        self._bucket_locks: dict[Kind, threading.Lock] = {
            "request": threading.Lock(),
            "batch": threading.Lock(),
        }
        self.waited_s = 0.0  # total time callers slept here (observability, tests)

    @contextmanager
    def acquire(self, kind: Kind = "request") -> Iterator[None]:
        """Block until a ``kind`` call may start within every budget; hold an in-flight slot meanwhile.

        A batch call books both the batch budget and the request budget. Raises QboRetryable only when
        ``max_wait_s`` was set and exceeded.
        """
        started = self._clock()
        deadline = None if self._max_wait_s is None else started + self._max_wait_s
        if not self._local_slots.acquire(timeout=None if deadline is None else max(0.0, deadline - started)):
            raise self._gave_up(kind)
        owner = uuid.uuid4().hex
        slot: int | None = None
        entered: float | None = None
        try:
            slot = self._claim_slot(owner, deadline, kind)
            # Rate after the slot: the call must start at its booked time, or delayed starts could bunch up
            # inside one window.
            if kind == "batch":
                self._book("batch", deadline)
                entered = self._admit(deadline)
            self._book("request", deadline)
            waited = self._clock() - started
            self.waited_s += waited
            if waited > 0.05:
                logger().debug(
                    "qbo call paced",
                    extra={"realm_id": self.realm_id, "kind": kind, "ms": int(waited * 1000)},
                )
            yield
        finally:
            try:
                if entered is not None:
                    # The call is over from here (answered, failed or timed out): QBO counted it by now, if at all.
                    self._record_end(entered)
                if slot is not None:
                    self._store.release_slot(self.realm_id, slot, owner)
            finally:
                self._local_slots.release()

    def _record_end(self, entered: float) -> None:
        try:
            self._store.done(self.realm_id, entered, self._clock())
        except Exception:
            # The entry stays live until its lease runs out: the budget is spent later, never too early.
            logger().exception("recording a batch call's end failed", extra={"realm_id": self.realm_id})

    def _admit(self, deadline: float | None) -> float:
        """Enter the batch call in the realm's log of calls that may still count in QBO's window; sleep while it
        is full. Returns the start entered (for ``done``)."""
        lim = self.limits
        window = lim.period_s + lim.skew_s
        with self._bucket_locks["batch"]:
            while True:
                # A start a hair before now, unique across containers (its entry lapses no later for it).
                now = self._clock() - random.random() * 1e-4
                booking = self._store.admit(self.realm_id, now, lim.batch_per_period, window, lim.lease_s)
                if booking.booked:
                    return now
                self._wait(booking.wait_s, deadline, "batch")

    def _claim_slot(self, owner: str, deadline: float | None, kind: Kind) -> int:
        backoff = 0.02
        while True:
            now = self._clock()
            slot = self._store.claim_slot(self.realm_id, self.limits.max_inflight, owner, now, self.limits.lease_s)
            if slot is not None:
                return slot
            # Held by other containers: poll with jittered backoff (their calls are short).
            self._wait(backoff * (0.5 + random.random()), deadline, kind)
            backoff = min(backoff * 2, 0.25)

    def _book(self, bucket: Kind, deadline: float | None) -> None:
        """Book a start in the bucket, then sleep until it outside the lock (the next caller may book the
        start after it meanwhile). A booked start past the deadline is given up: one interval of the budget."""
        interval, tolerance = self.limits.gcra(bucket)
        with self._bucket_locks[bucket]:
            while True:
                booking = self._store.take(self.realm_id, bucket, self._clock(), interval, tolerance)
                if booking.booked:
                    break
                self._wait(booking.wait_s, deadline, bucket)
        if booking.wait_s > 0:
            self._wait(booking.wait_s, deadline, bucket)

    def _wait(self, seconds: float, deadline: float | None, kind: Kind) -> None:
        if deadline is not None and self._clock() + seconds > deadline:
            raise self._gave_up(kind)
        self._sleep(seconds)

    def _gave_up(self, kind: Kind) -> QboRetryable:
        return QboRetryable(
            f"waited longer than {self._max_wait_s:g} s for a QuickBooks {kind} slot",
            code="paced",
            uncertain=False,
        )


_pacers: dict[str, Pacer] = {}
_pacers_lock = threading.Lock()


def pacer_for(realm_id: str) -> Pacer:
    """The container's shared Pacer for a realm (created on first use)."""
    with _pacers_lock:
        pacer = _pacers.get(realm_id)
        if pacer is None:
            pacer = _pacers[realm_id] = Pacer(realm_id)
        return pacer


def reset_pacers() -> None:
    """Tests: forget per-container pacers (their limits come from settings)."""
    with _pacers_lock:
        _pacers.clear()
