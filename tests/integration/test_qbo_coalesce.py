"""Write coalescing against the QBO emulator: concurrent writers share /batch calls, faults reach their caller."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from infra.qbo_emulator import EmulatorServer
from infra.qbo_emulator.control import EmulatorControl
from shared.adapters.qbo import pacing
from shared.adapters.qbo.client import QboClient
from shared.adapters.qbo.coalesce import CoalescingClient
from shared.adapters.qbo.faults import QboFault
from shared.config import reset_settings_cache
from tests.concurrency import run_at_once
from tests.sync_harness import EmulatorTokens

# A batch goes when every counted worker waits on it; the linger only bounds a straggler. Long, so that a thread
# slowed by a loaded machine cannot split a batch the test expects whole.
LINGER_S = 30.0


@pytest.fixture
def realm_client(
    moto_aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[EmulatorControl, QboClient]]:
    server = EmulatorServer(port=0).start()
    try:
        monkeypatch.setenv("QBO_BASE_URL", server.url)
        reset_settings_cache()
        pacing.reset_pacers()
        control = EmulatorControl(server.url)
        realm = str(control.create_realm(company_name="Coalesce")["realm_id"])
        yield control, QboClient(realm, tokens=EmulatorTokens(control))
    finally:
        server.stop()


def _run_workers(client: CoalescingClient, n: int, fn: Callable[[int], Any]) -> list[Any]:
    return run_at_once(n, fn, timeout_s=30, each=client.worker)


def test_thirty_concurrent_creates_share_one_batch_call(realm_client: tuple[EmulatorControl, QboClient]) -> None:
    control, inner = realm_client
    client = CoalescingClient(inner, max_items=30, linger_s=LINGER_S)
    before = control.stats(inner.realm_id)
    results = _run_workers(
        client, 30, lambda i: client.create("Customer", {"DisplayName": f"Patient C{i:02d}"}, request_id=f"r{i}")
    )
    after = control.stats(inner.realm_id)
    assert all(isinstance(r, dict) and r["DisplayName"] == f"Patient C{i:02d}" for i, r in enumerate(results))
    assert after["batch"] - before["batch"] == 1
    assert after["writes"] - before["writes"] == 0  # no single-entity write calls
    assert len(control.books(inner.realm_id)["Customer"]) == 30


def test_a_faulty_item_fails_only_its_own_caller(realm_client: tuple[EmulatorControl, QboClient]) -> None:
    control, inner = realm_client
    control.ui(inner.realm_id, "Customer", "create", {"DisplayName": "Patient C03"})
    client = CoalescingClient(inner, max_items=30, linger_s=LINGER_S)
    results = _run_workers(
        client, 6, lambda i: client.create("Customer", {"DisplayName": f"Patient C{i:02d}"}, request_id=f"f{i}")
    )
    assert isinstance(results[3], QboFault) and results[3].code == "6240"
    assert all(isinstance(r, dict) for i, r in enumerate(results) if i != 3)


def test_a_lost_batch_response_reaches_every_caller_as_uncertain(
    realm_client: tuple[EmulatorControl, QboClient],
) -> None:
    control, inner = realm_client
    control.set_faults(inner.realm_id, commit_then_drop={"next": 1})
    client = CoalescingClient(inner, max_items=30, linger_s=LINGER_S)
    results = _run_workers(
        client, 4, lambda i: client.create("Customer", {"DisplayName": f"Patient D{i}"}, request_id=f"d{i}")
    )
    assert all(isinstance(r, QboFault) and r.uncertain for r in results)
    # The batch committed: the callers' read-back (the sync engine's job) finds every customer.
    assert len(control.books(inner.realm_id)["Customer"]) == 4


def test_a_retried_batch_gets_the_first_attempts_answer_for_every_item(
    realm_client: tuple[EmulatorControl, QboClient],
) -> None:
    control, inner = realm_client
    control.set_faults(inner.realm_id, commit_then_drop={"next": 1})
    client = CoalescingClient(inner, max_items=30, linger_s=LINGER_S)

    def create(i: int) -> dict[str, object]:
        return client.create("Customer", {"DisplayName": f"Patient R{i}"}, request_id=f"retry-{i}")

    assert all(isinstance(r, QboFault) and r.uncertain for r in _run_workers(client, 3, create))
    # The same writes again: the same batch requestid, so QBO replays the committed batch's answer.
    again = _run_workers(client, 3, create)
    assert [r["DisplayName"] for r in again] == [f"Patient R{i}" for i in range(3)]  # type: ignore[index]
    assert control.stats(inner.realm_id)["replayed"] == 1
    assert len(control.books(inner.realm_id)["Customer"]) == 3


def test_writes_arriving_while_the_batch_budget_refills_go_out_together(
    realm_client: tuple[EmulatorControl, QboClient],
) -> None:
    control, inner = realm_client
    client = CoalescingClient(inner, max_items=30, linger_s=0.01, min_interval_s=1.5)
    # One write goes out at once (first batch); ten more arrive right after it: they wait for the
    # budget and leave as a single second batch instead of ten.
    client.create("Customer", {"DisplayName": "Patient E00"}, request_id="e0")
    before = control.stats(inner.realm_id)["batch"]
    results = _run_workers(
        client,
        10,
        lambda i: client.create("Customer", {"DisplayName": f"Patient E{i + 1:02d}"}, request_id=f"e{i + 1}"),
    )
    assert all(isinstance(r, dict) for r in results), results
    assert control.stats(inner.realm_id)["batch"] - before == 1


def _filling_client(inner: QboClient) -> CoalescingClient:
    """A first write may wait up to a (long) batch interval for the others: the batch goes when it is full, and a
    loaded machine's late threads still make it in time."""
    return CoalescingClient(inner, max_items=30, linger_s=0.01, min_interval_s=10.0)


def test_a_first_write_waits_for_busy_workers_to_fill_its_batch(
    realm_client: tuple[EmulatorControl, QboClient],
) -> None:
    control, inner = realm_client
    client = _filling_client(inner)
    before = control.stats(inner.realm_id)["batch"]

    def write(i: int) -> Any:
        # Writer 0 is ready first; the other 29 are still busy (reading the ledger, say) for a moment.
        time.sleep(0.05 if i == 0 else 0.3)
        return client.create("Customer", {"DisplayName": f"Patient F{i:02d}"}, request_id=f"f{i}")

    results = _run_workers(client, 30, write)
    assert all(isinstance(r, dict) for r in results)
    # Sent alone, the first write would have spent a batch call of the realm's budget on one item.
    assert control.stats(inner.realm_id)["batch"] - before == 1


def test_another_realms_busy_workers_do_not_hold_a_realms_batch(
    realm_client: tuple[EmulatorControl, QboClient],
) -> None:
    control, inner = realm_client
    other = str(control.create_realm(company_name="Flooded")["realm_id"])
    quiet = CoalescingClient(inner, max_items=30, linger_s=LINGER_S, min_interval_s=0.0)
    flooded = CoalescingClient(
        QboClient(other, tokens=EmulatorTokens(control)), workers=quiet.workers, max_items=30, linger_s=LINGER_S
    )
    written = threading.Event()
    held_up: list[bool] = []

    def busy(_: int) -> None:  # the flooded realm's reconciles, busy reading the ledger meanwhile
        with flooded.worker():
            held_up.append(not written.wait(timeout=20))

    threads = [threading.Thread(target=busy, args=(i,)) for i in range(29)]
    for t in threads:
        t.start()
    with quiet.worker():
        quiet.create("Customer", {"DisplayName": "Patient Q1"}, request_id="q1")
    written.set()
    for t in threads:
        t.join(timeout=30)

    # Counted together, 29 busy workers would have made the quiet realm's write wait (linger) to fill its batch;
    # they are another realm's, whose writes can never join it, so it went at once.
    assert held_up == [False] * 29
    assert [c["DisplayName"] for c in control.books(inner.realm_id)["Customer"]] == ["Patient Q1"]


def test_a_first_write_waits_for_the_invocations_records_still_to_start(
    realm_client: tuple[EmulatorControl, QboClient],
) -> None:
    control, inner = realm_client
    client = _filling_client(inner)
    before = control.stats(inner.realm_id)["batch"]
    # An invocation's 30 records: the pool has started two (record 1 reads the ledger first, then record 0 writes);
    # the other 28 are queued for a thread and start a moment after that write. Events, not sleeps, order the
    # steps that matter, so a loaded machine cannot reorder them.
    client.workers.expect([inner.realm_id] * 30)
    reading, writing, all_started = threading.Event(), threading.Event(), threading.Event()
    started = iter(range(1, 29))
    lock = threading.Lock()

    def create(i: int) -> Any:
        return client.create("Customer", {"DisplayName": f"Patient S{i:02d}"}, request_id=f"s{i}")

    def record(i: int) -> Any:
        if i == 0:
            assert reading.wait(10)
            with client.worker():
                writing.set()
                return create(i)
        if i == 1:
            with client.worker():
                reading.set()
                assert all_started.wait(10)  # reading the ledger while the others start
                return create(i)
        assert writing.wait(10)
        time.sleep(0.2)  # queued for a thread
        with client.worker():
            with lock:
                if next(started) == 28:
                    all_started.set()
            return create(i)

    results = run_at_once(30, record, timeout_s=30)
    client.workers.forget_expected()
    assert all(isinstance(r, dict) for r in results), results
    # Counting only the started records, the first write would have left alone (1 running < 29 to fill).
    assert control.stats(inner.realm_id)["batch"] - before == 1


@pytest.mark.parametrize("alone_max", [0, 5])
def test_a_last_write_goes_alone_instead_of_waiting_for_the_batch_budget(
    realm_client: tuple[EmulatorControl, QboClient], alone_max: int
) -> None:
    control, inner = realm_client
    client = CoalescingClient(inner, max_items=30, linger_s=0.01, min_interval_s=2.0, alone_max=alone_max)
    before = control.stats(inner.realm_id)
    with client.worker():
        invoice = client.create("Customer", {"DisplayName": "Patient V1"}, request_id="v1")  # a batch call
        # Its follow-up (a copay on the invoice) right after: nothing else can join it before the budget refills.
        copay = client.create("Customer", {"DisplayName": "Patient V2"}, request_id="v2")
    after = control.stats(inner.realm_id)

    assert (invoice["DisplayName"], copay["DisplayName"]) == ("Patient V1", "Patient V2")
    if alone_max:  # a single call of the request budget, at once
        assert (after["batch"] - before["batch"], after["writes"] - before["writes"]) == (1, 1)
        assert client.singles_sent == 1
    else:  # the next batch call, one batch interval later
        assert (after["batch"] - before["batch"], after["writes"] - before["writes"]) == (2, 0)


def test_the_batch_budget_counts_from_when_a_paced_batch_left_not_from_when_it_was_formed(
    realm_client: tuple[EmulatorControl, QboClient],
) -> None:
    """A batch that waited for the realm's batch budget (booked by another container) left late; a write right
    after it would wait a whole interval for the next batch call, so it goes alone. Counting the interval from
    when the batch was formed, the budget looked refilled and the write took the next batch call, an interval
    later (a quiet realm's copays after its invoices)."""
    control, realm_inner = realm_client
    limits = pacing.PaceLimits(rate_per_period=500, max_inflight=10, batch_per_period=2, period_s=4.0)
    interval = limits.gcra("batch")[0]  # 2 s
    pacer = pacing.Pacer(realm_inner.realm_id, limits=limits)
    inner = QboClient(realm_inner.realm_id, tokens=EmulatorTokens(control), pacer=pacer)
    client = CoalescingClient(inner, max_items=30, linger_s=0.01, min_interval_s=interval, alone_max=5)
    with pacer.acquire("batch"):
        pass  # another container's batch call: this one's first waits an interval
    before = control.stats(inner.realm_id)
    with client.worker():
        client.create("Customer", {"DisplayName": "Patient W1"}, request_id="w1")  # formed now, left ~2 s later
        time.sleep(interval / 4)  # the copay's own work: past an interval from the forming, not from the leaving
        copay = client.create("Customer", {"DisplayName": "Patient W2"}, request_id="w2")
    after = control.stats(inner.realm_id)

    assert copay["DisplayName"] == "Patient W2"
    assert (after["batch"] - before["batch"], after["writes"] - before["writes"]) == (1, 1)
    assert client.singles_sent == 1
