"""Stream poller logic against a fake DynamoDB Streams client: shard rollover, ordering, on-failure shape."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from infra.local.runtime import Runtime
from infra.local.streams import StreamPoller
from infra.local.template import EventSourceSpec

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/T/stream/1"


class _Missing(Exception):
    pass


class FakeStreams:
    """Shard ``parent`` (closed) then its child ``child`` (open), as after a DynamoDB shard rollover."""

    exceptions = SimpleNamespace(
        ResourceNotFoundException=_Missing, TrimmedDataAccessException=_Missing, ExpiredIteratorException=_Missing
    )

    def __init__(self) -> None:
        self.records = {"parent": [self._rec(1, "p1"), self._rec(2, "p2")], "child": [self._rec(3, "c1")]}
        self.closed = {"parent"}

    @staticmethod
    def _rec(seq: int, key: str) -> dict[str, Any]:
        return {
            "eventID": key,
            "eventName": "INSERT",
            "dynamodb": {
                "ApproximateCreationDateTime": datetime(2026, 1, 1, tzinfo=UTC),
                "Keys": {"pk": {"S": key}},
                "NewImage": {"pk": {"S": key}, "blob": {"B": b"\x01"}},
                "SequenceNumber": str(seq),
                "SizeBytes": 10,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        }

    def describe_stream(self, **_: Any) -> dict[str, Any]:
        # Listed child first on purpose: the poller must still finish the parent first.
        return {
            "StreamDescription": {
                "Shards": [
                    {
                        "ShardId": "child",
                        "ParentShardId": "parent",
                        "SequenceNumberRange": {"StartingSequenceNumber": "3"},
                    },
                    {
                        "ShardId": "parent",
                        "SequenceNumberRange": {"StartingSequenceNumber": "1", "EndingSequenceNumber": "2"},
                    },
                ]
            }
        }

    def get_shard_iterator(self, ShardId: str, ShardIteratorType: str, **_: Any) -> dict[str, Any]:
        assert ShardIteratorType == "TRIM_HORIZON"
        return {"ShardIterator": f"{ShardId}:0"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        shard, pos = ShardIterator.split(":")
        records = self.records[shard][int(pos) :]
        end = len(self.records[shard])
        nxt = None if shard in self.closed else f"{shard}:{end}"
        return {"Records": records, "NextShardIterator": nxt}


class FakeSqs:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_message(self, QueueUrl: str, MessageBody: str) -> None:
        self.sent.append(json.loads(MessageBody))


def _spec(**kw: Any) -> EventSourceSpec:
    return EventSourceSpec(logical_id="Esm", function_id="Fn", source_kind="dynamodb", source_id="T", **kw)


def make_poller(fail_keys: set[str], **spec_kw: Any) -> tuple[StreamPoller, list[list[str]], FakeSqs]:
    spec = _spec(batch_size=10, **spec_kw)
    runtime = Runtime({}, "us-east-1", "123456789012")
    batches: list[list[str]] = []

    def invoke(function_id: str, event: dict[str, Any], container: int = 0) -> Any:
        keys = [r["dynamodb"]["Keys"]["pk"]["S"] for r in event["Records"]]
        batches.append(keys)
        if fail_keys.intersection(keys):
            raise RuntimeError("boom")
        return {"batchItemFailures": []}

    runtime.invoke = invoke  # type: ignore[method-assign]
    sqs = FakeSqs()
    poller = StreamPoller(
        spec, ARN, streams_client=FakeStreams(), sqs_client=sqs, on_failure_url="q", runtime=runtime, region="us-east-1"
    )
    poller._refresh_shards()  # what start() does, without the thread
    return poller, batches, sqs


def _cycles(poller: StreamPoller, n: int) -> None:
    """``n`` polling cycles, each followed by the end of the batches it started (they run in delivery threads)."""
    for _ in range(n):
        poller.poll_once()
        poller.join_deliveries()


def test_parent_shard_is_finished_before_its_child() -> None:
    poller, batches, _ = make_poller(set())
    _cycles(poller, 5)

    assert batches == [["p1", "p2"], ["c1"]]
    assert poller.shards["parent"].done and poller.shards["child"].checkpoint == "3"


def test_records_have_lambda_shape_with_base64_binary_and_epoch_time() -> None:
    poller, _, _ = make_poller(set())
    seen: list[dict[str, Any]] = []
    poller.runtime.invoke = lambda fn, event, container=0: seen.extend(event["Records"])  # type: ignore[method-assign]
    _cycles(poller, 1)

    rec = seen[0]
    assert rec["eventSourceARN"] == ARN and rec["eventSource"] == "aws:dynamodb"
    assert rec["dynamodb"]["NewImage"]["blob"] == {"B": "AQ=="}
    assert rec["dynamodb"]["ApproximateCreationDateTime"] == int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())


def test_exhausted_retries_send_lambdas_on_failure_record_and_move_on() -> None:
    poller, batches, sqs = make_poller({"p2"}, maximum_retry_attempts=0, bisect_on_error=True)
    for _ in range(10):
        _cycles(poller, 1)
        for shard in poller.shards.values():
            for lane in shard.lanes:
                lane.retry_at = 0.0  # skip the backoff

    # [p1,p2] fails -> bisect -> [p1] ok, [p2] fails with no retries left -> on-failure; then the child.
    assert batches == [["p1", "p2"], ["p1"], ["p2"], ["c1"]]
    (info,) = sqs.sent
    batch_info = info["DDBStreamBatchInfo"]
    assert batch_info == {
        "shardId": "parent",
        "startSequenceNumber": "2",
        "endSequenceNumber": "2",
        "approximateArrivalOfFirstRecord": "2026-01-01T00:00:00.000Z",
        "approximateArrivalOfLastRecord": "2026-01-01T00:00:00.000Z",
        "batchSize": 1,
        "streamArn": ARN,
    }
    assert info["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert set(info) == {"requestContext", "responseContext", "version", "timestamp", "DDBStreamBatchInfo"}


def test_a_batch_is_cut_at_lambdas_6_mb_payload_limit() -> None:
    """Large records: batches of what fits 6 MB, not of BatchSize (10); a lone record over it still goes."""
    poller, batches, _ = make_poller(set())
    streams = poller.streams
    big = [FakeStreams._rec(i, f"p{i}") for i in range(1, 6)]
    for rec in big:
        rec["dynamodb"]["NewImage"]["blob"] = {"B": b"\x00" * 1_600_000}  # 2.13 MB once base64-encoded
    huge = FakeStreams._rec(6, "c1")
    huge["dynamodb"]["NewImage"]["blob"] = {"B": b"\x00" * 5_000_000}
    streams.records = {"parent": big, "child": [huge]}
    _cycles(poller, 8)

    assert batches == [["p1", "p2"], ["p3", "p4"], ["p5"], ["c1"]]


def _parallel_poller(factor: int, keys: list[str], invoke: Any) -> StreamPoller:
    """One closed shard holding a record per entry of ``keys`` (in that order), ParallelizationFactor ``factor``."""
    spec = _spec(batch_size=3, parallelization_factor=factor, report_batch_item_failures=True)
    runtime = Runtime({}, "us-east-1", "123456789012")
    runtime.invoke = invoke  # type: ignore[method-assign]
    streams = FakeStreams()
    streams.records = {"parent": [FakeStreams._rec(i + 1, k) for i, k in enumerate(keys)], "child": []}
    poller = StreamPoller(
        spec, ARN, streams_client=streams, sqs_client=FakeSqs(), on_failure_url="q", runtime=runtime, region="r"
    )
    poller._refresh_shards()
    return poller


def _poll_until(poller: StreamPoller, done: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        poller.poll_once()
        time.sleep(0.005)
    poller.stop()
    assert done(), "the poller did not deliver everything in time"


def test_parallelization_factor_runs_a_shards_lanes_at_once_each_key_in_order_in_its_own_container() -> None:
    keys = [f"k{i % 6}" for i in range(36)]  # six keys, six records each, interleaved
    lock = threading.Lock()
    seen: list[tuple[int, list[str], list[str]]] = []
    running, most = [0], [0]

    def invoke(function_id: str, event: dict[str, Any], container: int = 0) -> Any:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
            recs = event["Records"]
            seen.append((container, [r["dynamodb"]["Keys"]["pk"]["S"] for r in recs], [r["eventID"] for r in recs]))
        return {"batchItemFailures": []}

    poller = _parallel_poller(3, keys, invoke)
    _poll_until(poller, lambda: poller.shards["parent"].done)

    delivered = [seq for _, _, seqs in seen for seq in seqs]
    assert sorted(delivered) == sorted(keys) and len(delivered) == 36  # each record once (eventID = its key here)
    assert most[0] > 1  # lanes ran at once
    lane_of: dict[str, int] = {}
    for container, batch_keys, _ in seen:
        assert len(batch_keys) <= 3
        for k in batch_keys:
            assert lane_of.setdefault(k, container) == container  # a key always goes to the same lane/container
    assert len(set(lane_of.values())) > 1
    assert poller.shards["parent"].checkpoint == "36"


def test_a_failing_lane_retries_without_holding_up_the_others() -> None:
    keys = ["bad", "a", "b", "c", "d", "e", "f", "g"]
    calls: list[list[str]] = []
    lock = threading.Lock()
    bad_tries = [0]

    def invoke(function_id: str, event: dict[str, Any], container: int = 0) -> Any:
        batch = [r["dynamodb"]["Keys"]["pk"]["S"] for r in event["Records"]]
        with lock:
            calls.append(batch)
            if "bad" in batch and bad_tries[0] < 3:
                bad_tries[0] += 1
                return {
                    "batchItemFailures": [
                        {"itemIdentifier": event["Records"][batch.index("bad")]["dynamodb"]["SequenceNumber"]}
                    ]
                }
        return {"batchItemFailures": []}

    poller = _parallel_poller(2, keys, invoke)
    _poll_until(poller, lambda: poller.shards["parent"].done)

    def lane(key: str) -> int:
        return poller._lane_of({"dynamodb": {"Keys": {"pk": {"S": key}}}})

    other_lane = {k for k in keys if lane(k) != lane("bad")}
    assert other_lane  # the keys are spread over both lanes
    assert bad_tries[0] == 3 and sum(1 for b in calls if "bad" in b) == 4  # retried until it succeeded
    succeeded = max(i for i, b in enumerate(calls) if "bad" in b)
    assert other_lane <= {k for b in calls[:succeeded] for k in b}  # the other lane went on meanwhile


def _runtime_of(tmp_path: Any, function_id: str, package: str, source: str, **spec: Any) -> Runtime:
    """A runtime with one function whose handler is ``source`` (``handler`` in ``{package}/app.py``)."""
    from infra.local.template import FunctionSpec

    pkg = tmp_path / package
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "app.py").write_text(source)
    fn = FunctionSpec(logical_id=function_id, handler=f"{package}.app.handler", code_dir=tmp_path, **spec)
    return Runtime({function_id: fn}, "us-east-1", "123456789012")


def test_each_container_keeps_its_own_handler_module_state(tmp_path: Any) -> None:
    """Concurrent batches of a ParallelizationFactor run in containers of their own: the handler module's state
    (a sync worker's per-invocation bookkeeping, its coalescers) is not shared between them."""
    source = "SEEN = []\n\ndef handler(event, context):\n    SEEN.append(event)\n    return len(SEEN)\n"
    runtime = _runtime_of(tmp_path, "Counting", "fn_counting", source)

    assert [runtime.invoke("Counting", i) for i in range(3)] == [1, 2, 3]
    assert [runtime.invoke("Counting", i, 1) for i in range(2)] == [1, 2]  # a second container, fresh state
    assert runtime.invoke("Counting", 9, 0) == 4
    assert runtime.stats.snapshot()["invocations"]["Counting"] == 6


def test_an_invocation_still_running_at_its_timeout_logs_where_it_is(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    source = (
        "import time\n\ndef stuck_in_here():\n    time.sleep(1.4)\n\ndef handler(event, context):\n"
        "    stuck_in_here()\n    return 'done'\n"
    )
    runtime = _runtime_of(tmp_path, "Slow", "fn_slow", source, timeout_s=1)

    with caplog.at_level(logging.WARNING, logger="qbsync.local"):
        assert runtime.invoke("Slow", {}) == "done"
    (at_timeout,) = [r.getMessage() for r in caplog.records if "still running at its Timeout" in r.getMessage()]
    assert "in stuck_in_here" in at_timeout
    assert any("longer than its Timeout of 1s" in r.getMessage() for r in caplog.records)


def test_the_poller_reads_on_while_a_batch_runs_and_filtered_records_do_not_fill_its_buffer() -> None:
    """As Lambda's pollers: the next batch is read while the function runs (no read between invocations), and
    records the filter drops do not count against the read-ahead (the batch under way and the next one)."""
    spec = _spec(batch_size=2, filters=[{"dynamodb": {"Keys": {"pk": {"S": [{"prefix": "m"}]}}}}])
    streams = FakeStreams()
    streams.records = {"parent": [], "child": [FakeStreams._rec(1, "m1"), FakeStreams._rec(2, "m2")]}
    streams.closed = {"parent"}
    reads: list[int] = []
    get_records = streams.get_records

    def limited(ShardIterator: str, Limit: int) -> dict[str, Any]:  # at most 4 records a read
        shard, pos = ShardIterator.split(":")
        resp = get_records(ShardIterator=ShardIterator, Limit=Limit)
        resp["Records"] = resp["Records"][:4]
        if resp["NextShardIterator"]:
            resp["NextShardIterator"] = f"{shard}:{int(pos) + len(resp['Records'])}"
        reads.append(len(resp["Records"]))
        return resp

    streams.get_records = limited  # type: ignore[method-assign]
    runtime = Runtime({}, "us-east-1", "123456789012")
    release, started = threading.Event(), threading.Event()
    batches: list[list[str]] = []

    def invoke(function_id: str, event: dict[str, Any], container: int = 0) -> Any:
        batches.append([r["dynamodb"]["Keys"]["pk"]["S"] for r in event["Records"]])
        started.set()
        assert release.wait(5)
        return {"batchItemFailures": []}

    runtime.invoke = invoke  # type: ignore[method-assign]
    poller = StreamPoller(
        spec, ARN, streams_client=streams, sqs_client=FakeSqs(), on_failure_url=None, runtime=runtime, region="r"
    )
    poller._refresh_shards()
    _cycles(poller, 1)  # the parent (empty, closed) is done
    poller.poll_once()  # the child: m1, m2 read, their batch starts
    assert started.wait(5)
    more = [FakeStreams._rec(3 + i, f"f{i}") for i in range(5)] + [FakeStreams._rec(8, "m3"), FakeStreams._rec(9, "m4")]
    streams.records["child"].extend(more)
    poller.poll_once()  # f0-f3: all filtered, so the buffer still has room
    poller.poll_once()  # f4, m3, m4
    assert batches == [["m1", "m2"]]  # the first batch is still running...
    assert poller.shards["child"].buffered == 4  # ...and the next one is read already
    assert reads[-2:] == [4, 3]
    poller.poll_once()
    assert reads[-1] == 3  # two batches buffered: no more reading
    release.set()
    poller.join_deliveries()
    assert batches == [["m1", "m2"], ["m3", "m4"]]
