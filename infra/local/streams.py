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
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
import uuid
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


@dataclass
class _Shard:
    shard_id: str
    parent_id: str | None
    initial_position: str
    iterator: str | None = None
    started: bool = False
    reading_done: bool = False
    checkpoint: str | None = None
    buffer: list[_Entry] = field(default_factory=list)
    failures: int = 0
    retry_at: float = 0.0
    bisect_limit: int | None = None
    bisect_until: int = 0

    @property
    def done(self) -> bool:
        return self.reading_done and not self.buffer


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
        busy = False
        for shard in list(self.shards.values()):
            if shard.done or self._stop.is_set():
                continue
            parent = self.shards.get(shard.parent_id or "")
            if parent is not None and not parent.done:
                continue
            if self._read(shard):
                busy = True
            if shard.buffer:
                busy = True
                self._deliver(shard)
        return busy

    def _refresh_shards(self) -> None:
        self._last_refresh = time.monotonic()
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn}
        found: list[dict[str, Any]] = []
        while True:
            desc = self.streams.describe_stream(**kwargs)["StreamDescription"]
            found.extend(desc.get("Shards", []))
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
            shard = _Shard(s["ShardId"], s.get("ParentShardId"), position)
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
        if shard.checkpoint:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=shard.checkpoint)
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
        if shard.reading_done or len(shard.buffer) >= self.spec.batch_size:
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
        for raw in resp.get("Records", []):
            record = lambda_record(raw, self.stream_arn, self.region)
            size = len(json.dumps(record).encode()) + 2
            shard.buffer.append(_Entry(record, matches_any(self.spec.filters, record), now, size))
        return bool(resp.get("Records"))

    # delivery -----------------------------------------------------------------------------------------------
    def _deliver(self, shard: _Shard) -> None:
        while shard.buffer and not self._stop.is_set():
            if time.monotonic() < shard.retry_at:
                return
            while shard.buffer and not shard.buffer[0].matches:
                self._advance(shard, 1, filtered=True)
            if not shard.buffer:
                return
            if shard.bisect_limit and int(shard.buffer[0].seq) > shard.bisect_until:
                shard.bisect_limit = None
            limit = shard.bisect_limit or self.spec.batch_size
            batch_idx = [i for i, e in enumerate(shard.buffer) if e.matches][:limit]
            batch_idx, full = _within_payload(shard.buffer, batch_idx)
            window = self.spec.batching_window_s
            if (
                window > 0
                and not full
                and len(batch_idx) < limit
                and not shard.reading_done
                and time.monotonic() - shard.buffer[0].fetched_at < window
            ):
                return
            batch = [shard.buffer[i] for i in batch_idx]
            if not self._invoke(shard, batch, batch_idx):
                return

    def _advance(self, shard: _Shard, count: int, filtered: bool = False) -> None:
        done, shard.buffer = shard.buffer[:count], shard.buffer[count:]
        if done:
            shard.checkpoint = done[-1].seq
            if filtered:
                self.runtime.stats.add("filtered", self.name, len(done))
            else:
                filtered_n = sum(1 for e in done if not e.matches)
                if filtered_n:
                    self.runtime.stats.add("filtered", self.name, filtered_n)

    def _invoke(self, shard: _Shard, batch: list[_Entry], batch_idx: list[int]) -> bool:
        """Deliver one batch; returns True when the shard may continue right away."""
        event = {"Records": [e.record for e in batch]}
        self.runtime.stats.add("records", self.name, len(batch))
        failed_from: int | None = 0
        try:
            result = self.runtime.invoke(self.spec.function_id, event)
        except Exception as exc:
            log.info("stream %s: %s raised %s; retrying the batch", self.name, self.spec.function_id, exc)
        else:
            failed_from = self._first_failure(result, batch)
        if failed_from is None:
            self._advance(shard, batch_idx[-1] + 1)
            shard.failures, shard.retry_at = 0, 0.0
            return True
        if failed_from > 0:
            self._advance(shard, batch_idx[failed_from])
            batch, batch_idx = (
                batch[failed_from:],
                [i - batch_idx[failed_from] for i in batch_idx[failed_from:]],
            )
            shard.failures = 1
        else:
            shard.failures += 1
        max_retries = self.spec.maximum_retry_attempts
        if max_retries < 0 or shard.failures <= max_retries:
            self.runtime.stats.add("retries", self.name)
            shard.retry_at = time.monotonic() + min(0.05 * 2**shard.failures, 1.0)
            return False
        if self.spec.bisect_on_error and len(batch) > 1:
            shard.bisect_limit = math.ceil(len(batch) / 2)
            shard.bisect_until = max(shard.bisect_until, int(batch[-1].seq))
            shard.failures = 0
            return True
        self._send_on_failure(shard, batch)
        self._advance(shard, batch_idx[-1] + 1)
        shard.failures, shard.retry_at = 0, 0.0
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
