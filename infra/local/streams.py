"""DynamoDB stream → Lambda event source mapping, with Lambda's semantics.

Per shard (parents before children, new shards from TRIM_HORIZON), records are read into a buffer, turned
into Lambda-shaped records, filtered (non-matching records are dropped and the checkpoint moves past them) and
delivered in batches of up to BatchSize. Outcomes:

* success: the checkpoint moves past the batch;
* ``batchItemFailures`` (with ReportBatchItemFailures): records before the lowest failed SequenceNumber
  count as done; delivery restarts at that record (later records of the batch come again, as on Lambda).
  An unknown or empty itemIdentifier fails the whole batch;
* an exception (or an invalid response): the whole batch is retried.

Each failed delivery of the same head record counts one retry. When MaximumRetryAttempts (-1: forever) is
exceeded, the batch is split in two if BisectBatchOnFunctionError is on (halves get fresh retries);
a batch that cannot be split is sent to DestinationConfig.OnFailure as Lambda's ``DDBStreamBatchInfo``
record and skipped.

ParallelizationFactor N (1 to 10): each shard's records are split into N lanes by a hash of their partition
key, so records of one key stay in order in one lane, and up to N batches of a shard run at once, each lane in
its own delivery thread and its own container of the function (the runtime keeps the handler module's state
apart per container). Retries, bisection and the on-failure destination apply per lane, as Lambda applies them
per batch.

Reading and delivery overlap, with N = 1 too: the polling thread reads on (until each lane holds its next batch
too; records the filter drops do not count) while a lane's batch runs in its delivery thread, so a backlog's next
batch is ready when the previous invocation returns, as with Lambda's pollers. Reading after each invocation
instead put a GetRecords call and its decoding (about 0.3-0.6 s for a read of 1,000 records here) between any
two invocations of a backlog. While a lane runs and a cycle reads nothing new, the poller waits
``poll_interval_s`` before the next read.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from infra.local.filters import matches_any
from infra.local.loop import PollingLoop
from infra.local.runtime import Runtime
from infra.local.template import EventSourceSpec

log = logging.getLogger("qbsync.local")
# "Lambda passes all of the records in the batch to the function in a single call, up to the payload limit for
# synchronous invocation (6 MB)" (EventSourceMappingConfiguration.BatchSize): a batch is cut there too.
PAYLOAD_MAX_BYTES = 6 * 1024 * 1024
_EVENT_FRAME = len(b'{"Records": []}')


@dataclass
class _Entry:
    record: dict[str, Any]
    matches: bool
    fetched_at: float
    size: int = 0  # bytes of the record in the invocation's JSON payload (with its separator)

    @property
    def seq(self) -> str:
        return str(self.record["dynamodb"]["SequenceNumber"])


@dataclass(eq=False)
class _Lane:
    """One of a shard's ParallelizationFactor batch sequences: the records whose partition key hashes to it."""

    index: int = 0  # also the container its batches run in
    buffer: list[_Entry] = field(default_factory=list)
    checkpoint: str | None = None  # the last record delivered or filtered
    failures: int = 0
    retry_at: float = 0.0
    bisect_limit: int | None = None
    bisect_until: int = 0
    running: bool = False  # a delivery thread has it


@dataclass
class _Shard:
    shard_id: str
    parent_id: str | None
    initial_position: str
    lanes: list[_Lane]
    iterator: str | None = None
    started: bool = False
    reading_done: bool = False
    read_to: str | None = None  # the last record read (a new iterator starts after it)

    @property
    def buffered(self) -> int:
        """Records read and still to deliver: filtered ones do not count, as they never join a batch."""
        return sum(1 for lane in self.lanes for entry in lane.buffer if entry.matches)

    @property
    def done(self) -> bool:
        return self.reading_done and not any(lane.buffer or lane.running for lane in self.lanes)

    @property
    def checkpoint(self) -> str | None:
        """The last record delivered or filtered with every earlier record of the shard done too."""
        pending = min((int(lane.buffer[0].seq) for lane in self.lanes if lane.buffer), default=None)
        done = [lane.checkpoint for lane in self.lanes if lane.checkpoint]
        return max((c for c in done if pending is None or int(c) < pending), key=int, default=None)


class StreamPoller(PollingLoop):
    def __init__(
        self,
        spec: EventSourceSpec,
        stream_arn: str,
        *,
        streams_client: Any,
        sqs_client: Any,
        on_failure_url: str | None,
        runtime: Runtime,
        region: str,
        poll_interval_s: float = 0.1,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.stream_arn = stream_arn
        self.streams = streams_client
        self.sqs = sqs_client
        self.on_failure_url = on_failure_url
        self.runtime = runtime
        self.region = region
        self.poll_interval_s = poll_interval_s
        self.name = spec.logical_id
        self.shards: dict[str, _Shard] = {}
        self._last_refresh = 0.0
        self._first_refresh = True
        self._hash_key: str | None = None  # the table's partition key (lanes are chosen by its value)
        self._lock = threading.Lock()  # lanes' state, shared by the polling thread and delivery threads
        self._drains: list[threading.Thread] = []

    @property
    def lanes(self) -> int:
        return max(1, self.spec.parallelization_factor)

    def stop(self) -> None:
        super().stop()
        for t in self._drains:
            t.join(timeout=10)

    # lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> StreamPoller:
        self._refresh_shards()  # take LATEST positions now, not when the thread first runs
        self.start_loop()
        return self

    # one polling cycle ------------------------------------------------------------------------------------
    def poll_once(self) -> bool:
        """Read and deliver what is available; returns True when anything is pending or was done."""
        now = time.monotonic()
        if now - self._last_refresh > 0.5 or any(s.done for s in self.shards.values()):
            self._refresh_shards()
        busy = progressed = False
        for shard in list(self.shards.values()):
            if shard.done or self._stop.is_set():
                continue
            parent = self.shards.get(shard.parent_id or "")
            if parent is not None and not parent.done:
                continue
            if self._read(shard):
                busy = progressed = True
            for lane in shard.lanes:
                if lane.running:
                    busy = True
                elif lane.buffer:
                    busy = True
                    self._start_delivery(shard, lane)
        self._drains = [t for t in self._drains if t.is_alive()]
        if busy and not progressed:  # nothing new read: batches under way or waiting to retry; not a tight loop
            self._stop.wait(self.poll_interval_s)
        return busy

    def pause(self, timeout: float = 10.0) -> None:
        """Stop reading after the current cycle, and let the batches under way finish."""
        super().pause(timeout)
        self.join_deliveries(timeout)

    def join_deliveries(self, timeout: float = 10.0) -> None:
        """Wait for the batches under way (delivery threads) to finish."""
        for thread in list(self._drains):
            thread.join(timeout)

    def _start_delivery(self, shard: _Shard, lane: _Lane) -> None:
        lane.running = True

        def drain() -> None:
            try:
                self._deliver(shard, lane)
            except Exception:
                log.exception("stream %s: delivery failed; retrying", self.name)
                lane.retry_at = time.monotonic() + 0.5
            finally:
                lane.running = False

        thread = threading.Thread(target=drain, name=f"lane-{self.name}-{lane.index}", daemon=True)
        self._drains.append(thread)
        thread.start()

    def _refresh_shards(self) -> None:
        self._last_refresh = time.monotonic()
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn}
        found: list[dict[str, Any]] = []
        while True:
            desc = self.streams.describe_stream(**kwargs)["StreamDescription"]
            found.extend(desc.get("Shards", []))
            hash_keys = [k["AttributeName"] for k in desc.get("KeySchema", []) if k["KeyType"] == "HASH"]
            self._hash_key = hash_keys[0] if hash_keys else self._hash_key
            last = desc.get("LastEvaluatedShardId")
            if not last:
                break
            kwargs["ExclusiveStartShardId"] = last
        for s in found:
            if s["ShardId"] in self.shards:
                continue
            closed = "EndingSequenceNumber" in s.get("SequenceNumberRange", {})
            position = "TRIM_HORIZON"
            if self._first_refresh and self.spec.starting_position == "LATEST" and not closed:
                position = "LATEST"
            shard = _Shard(s["ShardId"], s.get("ParentShardId"), position, [_Lane(i) for i in range(self.lanes)])
            if self._first_refresh and self.spec.starting_position == "LATEST" and closed:
                shard.reading_done = True
            self.shards[shard.shard_id] = shard
            if position == "LATEST":
                self._ensure_iterator(shard)
        self._first_refresh = False

    def _ensure_iterator(self, shard: _Shard) -> None:
        if shard.iterator or shard.reading_done:
            return
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": shard.shard_id}
        if shard.read_to:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=shard.read_to)
        else:
            kwargs["ShardIteratorType"] = shard.initial_position
        try:
            shard.iterator = self.streams.get_shard_iterator(**kwargs)["ShardIterator"]
        except self.streams.exceptions.ResourceNotFoundException:
            shard.reading_done = True
        except self.streams.exceptions.TrimmedDataAccessException:
            kwargs.pop("SequenceNumber", None)
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
            shard.iterator = self.streams.get_shard_iterator(**kwargs)["ShardIterator"]
        shard.started = True

    def _read(self, shard: _Shard) -> bool:
        # Read ahead up to the next batch of each lane: a batch under way stays buffered until it is settled.
        if shard.reading_done or shard.buffered >= 2 * self.spec.batch_size * self.lanes:
            return False
        self._ensure_iterator(shard)
        if not shard.iterator:
            return False
        try:
            resp = self.streams.get_records(ShardIterator=shard.iterator, Limit=1000)
        except self.streams.exceptions.ExpiredIteratorException:
            shard.iterator = None
            return True
        except self.streams.exceptions.ResourceNotFoundException:
            shard.iterator, shard.reading_done = None, True
            return False
        shard.iterator = resp.get("NextShardIterator")
        if not shard.iterator:
            shard.reading_done = True
        now = time.monotonic()
        entries = []
        for raw in resp.get("Records", []):
            record = lambda_record(raw, self.stream_arn, self.region)
            size = len(json.dumps(record).encode()) + 2
            entries.append(_Entry(record, matches_any(self.spec.filters, record), now, size))
        with self._lock:
            for entry in entries:
                shard.lanes[self._lane_of(entry.record)].buffer.append(entry)
                shard.read_to = entry.seq
        return bool(entries)

    def _lane_of(self, record: dict[str, Any]) -> int:
        """Lambda keeps a partition key's records in order within one of the shard's concurrent batches."""
        if self.lanes == 1:
            return 0
        keys = record["dynamodb"].get("Keys", {})
        key = keys.get(self._hash_key) if self._hash_key else keys
        return zlib.crc32(json.dumps(key, sort_keys=True).encode()) % self.lanes

    # delivery -----------------------------------------------------------------------------------------------
    def _deliver(self, shard: _Shard, lane: _Lane) -> None:
        while not self._stop.is_set():
            with self._lock:
                picked = self._next_batch(shard, lane)
            if picked is None or not self._invoke(shard, lane, *picked):
                return

    def _next_batch(self, shard: _Shard, lane: _Lane) -> tuple[list[_Entry], list[int]] | None:
        """The lane's next batch to invoke (entries, their indexes in the buffer), or None when it must wait."""
        if not lane.buffer or time.monotonic() < lane.retry_at:
            return None
        while lane.buffer and not lane.buffer[0].matches:
            self._advance(lane, 1, filtered=True)
        if not lane.buffer:
            return None
        if lane.bisect_limit and int(lane.buffer[0].seq) > lane.bisect_until:
            lane.bisect_limit = None
        limit = lane.bisect_limit or self.spec.batch_size
        batch_idx = [i for i, e in enumerate(lane.buffer) if e.matches][:limit]
        batch_idx, full = _within_payload(lane.buffer, batch_idx)
        window = self.spec.batching_window_s
        if (
            window > 0
            and not full
            and len(batch_idx) < limit
            and not shard.reading_done
            and time.monotonic() - lane.buffer[0].fetched_at < window
        ):
            return None
        return [lane.buffer[i] for i in batch_idx], batch_idx

    def _advance(self, lane: _Lane, count: int, filtered: bool = False) -> None:
        done, lane.buffer = lane.buffer[:count], lane.buffer[count:]
        if done:
            lane.checkpoint = done[-1].seq
            if filtered:
                self.runtime.stats.add("filtered", self.name, len(done))
            else:
                filtered_n = sum(1 for e in done if not e.matches)
                if filtered_n:
                    self.runtime.stats.add("filtered", self.name, filtered_n)

    def _invoke(self, shard: _Shard, lane: _Lane, batch: list[_Entry], batch_idx: list[int]) -> bool:
        """Deliver one batch; returns True when the lane may continue right away."""
        event = {"Records": [e.record for e in batch]}
        self.runtime.stats.add("records", self.name, len(batch))
        failed_from: int | None = 0
        try:
            result = self.runtime.invoke(self.spec.function_id, event, lane.index)
        except Exception as exc:
            log.info("stream %s: %s raised %s; retrying the batch", self.name, self.spec.function_id, exc)
        else:
            failed_from = self._first_failure(result, batch)
        with self._lock:
            return self._settle(shard, lane, batch, batch_idx, failed_from)

    def _settle(
        self, shard: _Shard, lane: _Lane, batch: list[_Entry], batch_idx: list[int], failed_from: int | None
    ) -> bool:
        if failed_from is None:
            self._advance(lane, batch_idx[-1] + 1)
            lane.failures, lane.retry_at = 0, 0.0
            return True
        if failed_from > 0:
            self._advance(lane, batch_idx[failed_from])
            batch, batch_idx = (
                batch[failed_from:],
                [i - batch_idx[failed_from] for i in batch_idx[failed_from:]],
            )
            lane.failures = 1
        else:
            lane.failures += 1
        max_retries = self.spec.maximum_retry_attempts
        if max_retries < 0 or lane.failures <= max_retries:
            self.runtime.stats.add("retries", self.name)
            lane.retry_at = time.monotonic() + min(0.05 * 2**lane.failures, 1.0)
            return False
        if self.spec.bisect_on_error and len(batch) > 1:
            lane.bisect_limit = math.ceil(len(batch) / 2)
            lane.bisect_until = max(lane.bisect_until, int(batch[-1].seq))
            lane.failures = 0
            return True
        self._send_on_failure(shard, batch)
        self._advance(lane, batch_idx[-1] + 1)
        lane.failures, lane.retry_at = 0, 0.0
        return True

    def _first_failure(self, result: Any, batch: list[_Entry]) -> int | None:
        """Index in ``batch`` where delivery must restart, or None when the batch succeeded."""
        if not self.spec.report_batch_item_failures or not isinstance(result, dict):
            return None
        failures = result.get("batchItemFailures")
        if not failures:
            return None
        seqs = [e.seq for e in batch]
        idx = []
        for item in failures:
            ident = item.get("itemIdentifier") if isinstance(item, dict) else None
            if not ident or str(ident) not in seqs:
                log.warning("stream %s: invalid itemIdentifier %r fails the whole batch", self.name, ident)
                return 0
            idx.append(seqs.index(str(ident)))
        return min(idx)

    def _send_on_failure(self, shard: _Shard, batch: list[_Entry]) -> None:
        first, last = batch[0].record["dynamodb"], batch[-1].record["dynamodb"]
        doc = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": self.runtime.function_arn(self.spec.function_id),
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": max(self.spec.maximum_retry_attempts, 0) + 1,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "version": "1.0",
            "timestamp": _iso(time.time()),
            "DDBStreamBatchInfo": {
                "shardId": shard.shard_id,
                "startSequenceNumber": first["SequenceNumber"],
                "endSequenceNumber": last["SequenceNumber"],
                "approximateArrivalOfFirstRecord": _iso(first.get("ApproximateCreationDateTime", time.time())),
                "approximateArrivalOfLastRecord": _iso(last.get("ApproximateCreationDateTime", time.time())),
                "batchSize": len(batch),
                "streamArn": self.stream_arn,
            },
        }
        if self.on_failure_url:
            self.sqs.send_message(QueueUrl=self.on_failure_url, MessageBody=json.dumps(doc))
            self.runtime.stats.add("on_failure", self.name)
            log.info("stream %s: %d record(s) sent to the on-failure destination", self.name, len(batch))
        else:
            log.warning("stream %s: retries exhausted, %d record(s) discarded (no OnFailure)", self.name, len(batch))


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def lambda_record(raw: dict[str, Any], stream_arn: str, region: str) -> dict[str, Any]:
    """A GetRecords record (boto3 shape) as Lambda delivers it to a function."""
    ddb = dict(raw.get("dynamodb", {}))
    created = ddb.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        ddb["ApproximateCreationDateTime"] = int(created.timestamp())
    for key in ("Keys", "NewImage", "OldImage"):
        if key in ddb:
            ddb[key] = {k: _json_av(v) for k, v in ddb[key].items()}
    record = {
        "eventID": raw.get("eventID"),
        "eventName": raw.get("eventName"),
        "eventVersion": raw.get("eventVersion", "1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": ddb,
        "eventSourceARN": stream_arn,
    }
    if raw.get("userIdentity"):
        record["userIdentity"] = raw["userIdentity"]
    return record


def _json_av(av: dict[str, Any]) -> dict[str, Any]:
    """boto3 decodes binary attribute values to bytes; Lambda delivers them base64-encoded."""
    ((kind, value),) = av.items()
    if kind == "B":
        return {"B": base64.b64encode(value).decode()}
    if kind == "BS":
        return {"BS": [base64.b64encode(v).decode() for v in value]}
    if kind == "M":
        return {"M": {k: _json_av(v) for k, v in value.items()}}
    if kind == "L":
        return {"L": [_json_av(v) for v in value]}
    return {kind: value}


def _within_payload(buffer: list[_Entry], batch_idx: list[int]) -> tuple[list[int], bool]:
    """The longest prefix of ``batch_idx`` whose records fit one invocation's payload (at least one record, as
    Lambda sends a lone oversized record and the invocation fails); True when the limit cut the batch."""
    total = _EVENT_FRAME
    for n, i in enumerate(batch_idx):
        total += buffer[i].size
        if total > PAYLOAD_MAX_BYTES and n:
            return batch_idx[:n], True
    return batch_idx, False
