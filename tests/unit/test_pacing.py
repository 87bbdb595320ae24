"""Per-realm pacing: budgets hold under many threads, on a fake store and on DynamoDB (moto)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from shared.adapters.qbo.faults import QboRetryable
from shared.adapters.qbo.pacing import Booking, DynamoPaceStore, PaceLimits, Pacer
from tests.fakes import MemoryPaceStore


def most_in_window(times: list[float], window: float) -> int:
    """The most of ``times`` inside any closed window of ``window`` seconds."""
    s = sorted(times)
    return max((sum(1 for t in s[i:] if t <= s[i] + window) for i in range(len(s))), default=0)


class CallRecorder:
    """Counts concurrent calls and their start (and end) times, the way QBO would see them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.inflight = 0
        self.max_inflight = 0
        self.starts: list[float] = []
        self.spans: list[tuple[float, float]] = []

    def call(self, pacer: Pacer, kind: str = "request", duration: float = 0.03) -> None:
        with pacer.acquire(kind):  # type: ignore[arg-type]
            with self._lock:
                self.inflight += 1
                self.max_inflight = max(self.max_inflight, self.inflight)
                self.starts.append(time.time())
            started = time.time()
            time.sleep(duration)
            with self._lock:
                self.inflight -= 1
                self.spans.append((started, time.time()))


def most_countable_at_once(spans: list[tuple[float, float]], window: float) -> int:
    """The most calls QBO could count inside one window of ``window`` seconds, whatever moment between a call's
    start and end it counts it at: calls can share a window when the latest start is within ``window`` of the
    earliest end, so for each call, those started no later that had not ended ``window`` before it started."""
    return max(
        (sum(1 for s, e in spans if s <= start and e >= start - window) for start, _ in spans),
        default=0,
    )


class Booked:
    """The store the pacer books on, recording each booked start (the pacer's clock at booking plus the wait it
    was given): the start QBO would see, free of the scheduling delay between a booking and its thread running
    on a loaded machine (that delay made a thread's recorded start drift into the next window: 11 in 1 s once in
    CI)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self.at: dict[str, list[float]] = {"request": [], "batch": []}

    def take(self, realm_id: str, bucket: str, now: float, interval: float, tolerance: float) -> Booking:
        booking = self.inner.take(realm_id, bucket, now, interval, tolerance)
        if booking.booked:
            with self._lock:
                self.at[bucket].append(now + booking.wait_s)  # the booked start
        return booking

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def max_in_window(self, bucket: str, window: float) -> int:
        return most_in_window(self.at[bucket], window)


def run_threads(n: int, target: Any) -> float:
    started = time.monotonic()
    threads = [threading.Thread(target=target) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return time.monotonic() - started


SMALL = PaceLimits(rate_per_period=10, max_inflight=3, batch_per_period=4, period_s=1.0, lease_s=5.0, skew_s=0.02)


@pytest.fixture
def ddb_store(moto_aws: dict[str, str]) -> Iterator[DynamoPaceStore]:
    yield DynamoPaceStore()


def test_gcra_budget_leaves_no_window_over_the_limit() -> None:
    limits = PaceLimits(rate_per_period=480, max_inflight=8, batch_per_period=38)
    interval, tolerance = limits.gcra("request")
    burst = round(tolerance / interval) + 1
    assert burst == 8
    assert burst + int(60.0 / interval) == 480  # burst + steady starts within any closed minute: the budget

    interval, tolerance = limits.gcra("batch")
    assert tolerance == 0  # batch calls are spaced evenly, no burst
    assert int(60.0 / interval) + 1 == 38
    assert 60.0 / interval > 37.9  # sustained: the whole budget


def test_spaced_starts_fill_but_never_exceed_the_budget() -> None:
    limits = PaceLimits(rate_per_period=480, max_inflight=8, batch_per_period=38)
    for kind, limit in (("request", 480), ("batch", 38)):
        interval, tolerance = limits.gcra(kind)  # type: ignore[arg-type]
        burst = round(tolerance / interval) + 1
        starts = [0.0] * burst + [interval * k for k in range(1, 2 * limit)]
        assert most_in_window(starts, 60.0) == limit


@pytest.mark.parametrize("store_kind", ["memory", "dynamo"])
def test_threads_never_exceed_inflight_or_rate(store_kind: str, request: pytest.FixtureRequest) -> None:
    store = Booked(MemoryPaceStore() if store_kind == "memory" else request.getfixturevalue("ddb_store"))
    pacer = Pacer("realm-a", limits=SMALL, store=store)
    rec = CallRecorder()

    elapsed = run_threads(8, lambda: [rec.call(pacer) for _ in range(3)])

    assert len(rec.starts) == 24
    assert rec.max_inflight <= 3
    assert store.max_in_window("request", 1.0) <= 10
    assert elapsed >= 2.0  # 24 starts at 10 a second cannot take less (how long it takes is a benchmark question)


def test_two_containers_share_the_dynamodb_budget(ddb_store: DynamoPaceStore) -> None:
    # Two Pacer instances = two containers: only the table is shared.
    store = Booked(ddb_store)
    pacers = [Pacer("realm-a", limits=SMALL, store=store) for _ in range(2)]
    rec = CallRecorder()

    run_threads(8, lambda: [rec.call(pacers[i % 2]) for i in range(3)])

    assert rec.max_inflight <= 3
    assert store.max_in_window("request", 1.0) <= 10


def test_batch_calls_have_their_own_budget(ddb_store: DynamoPaceStore) -> None:
    store = Booked(ddb_store)
    pacer = Pacer("realm-a", limits=SMALL, store=store)
    rec = CallRecorder()

    run_threads(4, lambda: [rec.call(pacer, "batch", 0.0) for _ in range(2)])

    assert len(rec.starts) == 8
    assert store.max_in_window("batch", 1.0) <= 4


@pytest.mark.parametrize("store_kind", ["memory", "dynamo"])
def test_a_saturated_bucket_books_starts_exactly_one_interval_apart(
    store_kind: str, request: pytest.FixtureRequest
) -> None:
    # Callers book the next start while the previous one sleeps until its own, so the budget is not shortened
    # by each caller's sleep-and-retry latency (that drift left 8 % of the batch budget unused).
    # Half a second apart: a gap is exact unless a waiting thread wakes more than that late (a loaded machine).
    limits = PaceLimits(rate_per_period=100, max_inflight=3, batch_per_period=4, period_s=2.0, lease_s=5.0, skew_s=0.02)
    store = Booked(MemoryPaceStore() if store_kind == "memory" else request.getfixturevalue("ddb_store"))
    pacer = Pacer("realm-a", limits=limits, store=store)
    rec = CallRecorder()

    run_threads(3, lambda: [rec.call(pacer, "batch", 0.0) for _ in range(2)])

    interval, _ = limits.gcra("batch")
    starts = sorted(store.at["batch"])
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) == 6 and min(gaps) >= interval - 1e-6  # never closer than the budget allows
    assert sum(1 for g in gaps if abs(g - interval) < 1e-6) >= 3  # and booked back to back, not drifting


def test_a_saturated_realm_does_not_slow_another_realm(ddb_store: DynamoPaceStore) -> None:
    waits: list[float] = []

    def recording_sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    booked = Booked(ddb_store)
    slow = Pacer("realm-busy", limits=SMALL, store=booked)
    quiet = Pacer("realm-quiet", limits=SMALL, store=ddb_store, sleep=recording_sleep)
    busy = CallRecorder()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            busy.call(slow)

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # realm-busy is now queued up behind its budget
    for _ in range(3):
        with quiet.acquire():
            pass
    stop.set()
    for t in threads:
        t.join(timeout=10)

    # The quiet realm only ever waited for its own budget (a burst of 1, then one interval per call), never
    # for the busy realm's: measured as the waits it asked for, not wall time, so machine load cannot skew it.
    interval, _ = SMALL.gcra("request")
    assert sum(waits) <= 2 * interval + 0.05
    assert busy.starts and booked.max_in_window("request", 1.0) <= 10


def test_a_crashed_workers_slot_frees_when_its_lease_ends(ddb_store: DynamoPaceStore) -> None:
    limits = PaceLimits(rate_per_period=100, max_inflight=1, batch_per_period=10, period_s=1.0, lease_s=0.8)
    claimed_at = time.time()
    assert ddb_store.claim_slot("realm-a", 1, "crashed-worker", claimed_at, 0.8) == 0  # never released
    pacer = Pacer("realm-a", limits=limits, store=ddb_store)

    with pacer.acquire():
        acquired_at = time.time()

    assert claimed_at + 0.8 <= acquired_at < claimed_at + 3.0


def test_released_slot_is_reused_immediately(ddb_store: DynamoPaceStore) -> None:
    limits = PaceLimits(rate_per_period=100, max_inflight=1, batch_per_period=10, period_s=1.0, lease_s=30)
    pacer = Pacer("realm-a", limits=limits, store=ddb_store)
    with pacer.acquire():
        pass
    started = time.monotonic()
    with pacer.acquire():
        pass
    assert time.monotonic() - started < 0.5


def test_max_wait_gives_up_with_a_retryable() -> None:
    store = MemoryPaceStore()
    limits = PaceLimits(rate_per_period=2, max_inflight=1, batch_per_period=1, period_s=10.0)
    pacer = Pacer("realm-a", limits=limits, store=store, max_wait_s=0.2)
    with pacer.acquire():
        pass
    with pytest.raises(QboRetryable) as err, pacer.acquire():
        pass
    assert err.value.code == "paced" and not err.value.uncertain


@pytest.mark.parametrize("store_kind", ["memory", "dynamo"])
def test_batch_calls_count_until_a_window_after_they_ended(store_kind: str, request: pytest.FixtureRequest) -> None:
    """QBO counts a call at some moment before it answers. Spaced starts alone (4 a second here) let a call start
    a second after one that was still running then, and QBO could count both in one second with 3 more between
    them; the log of calls that ended less than a window ago keeps any window to 4, slower calls or not."""
    store = MemoryPaceStore() if store_kind == "memory" else request.getfixturevalue("ddb_store")
    pacers = [Pacer("realm-a", limits=SMALL, store=store) for _ in range(2)]  # two containers
    rec = CallRecorder()

    run_threads(6, lambda: [rec.call(pacers[i % 2], "batch", 0.4) for i in range(2)])

    assert len(rec.spans) == 12
    assert most_countable_at_once(rec.spans, 1.0 + SMALL.skew_s) <= 4
    assert most_countable_at_once(rec.spans, 1.0 - 0.4) > 1  # not one call at a time either


def test_a_batch_call_that_never_ends_counts_until_its_lease_runs_out(moto_aws: dict[str, str]) -> None:
    """A worker that died mid-call records no end: its entry counts until its lease (and a window) ran out."""
    store = DynamoPaceStore()
    for start in (10.0, 10.1, 10.2, 10.3):
        assert store.admit("realm-a", start, 4, 1.0, 5.0).booked
    assert not store.admit("realm-a", 10.4, 4, 1.0, 5.0).booked
    store.done("realm-a", 10.1, 10.5)  # the others never end
    assert not store.admit("realm-a", 11.4, 4, 1.0, 5.0).booked  # a window after it ended: not yet
    assert store.admit("realm-a", 11.6, 4, 1.0, 5.0).booked
    refused = store.admit("realm-a", 12.0, 4, 1.0, 5.0)
    assert not refused.booked and refused.wait_s == pytest.approx(16.0 - 12.0)  # the first lease: 10 + 5 + 1
    assert store.admit("realm-a", 16.01, 4, 1.0, 5.0).booked


def test_a_failed_end_record_still_frees_the_calls_slots() -> None:
    """Recording a batch call's end is a write of its own; when it fails the call's entry stays live until its
    lease runs out (logged), and its in-flight slots are freed all the same."""

    class EndsFail(MemoryPaceStore):
        def done(self, realm_id: str, started: float, ended: float) -> None:
            raise RuntimeError("DynamoDB unavailable")

    store = EndsFail()
    limits = PaceLimits(rate_per_period=100, max_inflight=2, batch_per_period=100, period_s=1.0, lease_s=5.0)
    pacer = Pacer("realm-a", limits=limits, store=store, max_wait_s=5.0)
    for _ in range(5):  # more calls than in-flight slots: each call's slots came back
        with pacer.acquire("batch"):
            pass
    assert store.slots == {} and len(store.log["realm-a"]) == 5
    assert all(c < 0 for c in store.log["realm-a"])  # still in flight: they count until their lease runs out
