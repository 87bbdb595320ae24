"""Template variants picked up without code changes, schedules, DynamoDB Local, and a clean stop."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from infra.local.aws import find_ddb_local_jar
from infra.local.stack import LocalStack
from tests.fixtures.local import handlers

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "local"


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def new_threads(before: set[threading.Thread]) -> list[str]:
    wait_until(lambda: not (set(threading.enumerate()) - before), timeout=5)
    return [t.name for t in set(threading.enumerate()) - before]


@pytest.mark.parametrize(
    ("template", "max_batch", "status_route"),
    [("template.yaml", 10, 404), ("template_b.yaml", 2, 200)],
)
def test_template_variant_changes_batch_size_and_routes_without_code_changes(
    template: str, max_batch: int, status_route: int
) -> None:
    handlers.reset()
    before = set(threading.enumerate())
    with LocalStack(FIXTURES / template, use_ddb_local=False, poll_interval_s=0.05) as stack:
        ddb = stack.client("dynamodb")
        with stack.paused():
            for i in range(5):
                ddb.put_item(
                    TableName="LedgerTable", Item={"pk": {"S": f"v-{i}"}, "sk": {"S": "1"}, "rtype": {"S": "event"}}
                )
        stack.wait_idle(timeout=30)
        r = requests.get(f"{stack.urls['api']}/v2/status/ok", timeout=10)

        # Counted by the runtime: variant B's two lanes (its ParallelizationFactor) run in two containers, each
        # with its own copy of the handler module and of what it records.
        stats = stack.runtime.stats.snapshot()
        assert stats["records"]["StreamFunctionLedger"] == 5
        batches = stats["invocations"]["StreamFunction"]
        assert batches == 1 if max_batch >= 5 else batches >= 3  # 5 records in batches of at most 2
        assert r.status_code == status_route
        if status_route == 200:
            assert r.json()["path_parameters"] == {"check": "ok"}
            assert r.json()["env"]["NEW_ROUTE_FLAG"] == "variant-b"
    assert new_threads(before) == []
    handlers.reset()


def test_schedule_fires_on_its_own_with_the_interval_override() -> None:
    handlers.reset()
    before = set(threading.enumerate())
    stack = LocalStack(FIXTURES / "template.yaml", use_ddb_local=False, schedule_interval_override_s=0.2).start()
    try:
        assert wait_until(lambda: len(handlers.calls("ScheduledFunction")) >= 4, timeout=10)
        events = handlers.calls("ScheduledFunction")
        assert {"job": "sweep"} in events  # the Events rule, with its Input
        assert {} in events  # the Scheduler schedule
    finally:
        stack.stop()
    assert new_threads(before) == []
    handlers.reset()


@pytest.mark.skipif(find_ddb_local_jar(FIXTURES) is None, reason="DynamoDB Local not installed (make ddb-local)")
def test_dynamodb_local_stream_semantics_and_stop_leaves_no_java_process() -> None:
    handlers.reset()
    before = set(threading.enumerate())
    stack = LocalStack(FIXTURES / "template.yaml", poll_interval_s=0.05).start()
    try:
        assert stack.ddb_backend == "dynamodb-local"
        java = stack._ddb.proc
        assert java is not None and java.poll() is None
        ddb = stack.client("dynamodb")
        item = {"pk": {"S": "d-1"}, "sk": {"S": "1"}, "rtype": {"S": "event"}}
        handlers.FAIL_ONCE.add("d-1")
        ddb.put_item(TableName="LedgerTable", Item=item)
        stack.wait_idle(timeout=30)
        ddb.put_item(TableName="LedgerTable", Item=item)  # identical re-put: no stream record on AWS
        stack.wait_idle(timeout=30)

        batches = [[r["dynamodb"]["Keys"]["pk"]["S"] for r in e["Records"]] for e in handlers.calls("StreamFunction")]
        assert batches == [["d-1"], ["d-1"]]  # first delivery failed, retried once; no record for the no-op
        assert stack.stats()["retries"]["StreamFunctionLedger"] == 1
    finally:
        stack.stop()
    assert java.poll() is not None
    port = stack.urls["dynamodb"].rsplit(":", 1)[1]
    left = subprocess.run(["pgrep", "-f", f"DynamoDBLocal.jar.*-port {port}"], capture_output=True, check=False)
    assert left.stdout == b""
    assert new_threads(before) == []
    handlers.reset()
