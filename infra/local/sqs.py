"""SQS → Lambda event source mapping, with Lambda's semantics.

Messages are received (up to BatchSize), shaped as Lambda SQS records and filtered (Lambda deletes messages
that match no filter). After the invocation the successes are deleted; failures (an exception: the whole
batch; ``batchItemFailures`` with ReportBatchItemFailures: those messages) are left alone, come back after the
visibility timeout, and the queue's own redrive policy moves them to its DLQ after maxReceiveCount.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from infra.local.filters import matches_any, sqs_filter_view
from infra.local.loop import PollingLoop
from infra.local.runtime import Runtime
from infra.local.template import EventSourceSpec

log = logging.getLogger("qbsync.local")

_COUNT_ATTRS = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


class QueuePoller(PollingLoop):
    def __init__(
        self,
        spec: EventSourceSpec,
        queue_url: str,
        queue_arn: str,
        *,
        sqs_client: Any,
        runtime: Runtime,
        region: str,
        poll_interval_s: float = 0.1,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.sqs = sqs_client
        self.runtime = runtime
        self.region = region
        self.poll_interval_s = poll_interval_s
        self.name = spec.logical_id

    def start(self) -> QueuePoller:
        self.start_loop()
        return self

    def poll_once(self) -> bool:
        """Receive and deliver one batch; True while the queue holds messages (visible/in flight/delayed)."""
        messages = self._receive()
        if not messages:
            attrs = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=_COUNT_ATTRS)["Attributes"]
            return any(int(attrs.get(a, 0)) for a in _COUNT_ATTRS)
        records = [self.lambda_record(m) for m in messages]
        keep = [r for r in records if matches_any(self.spec.filters, sqs_filter_view(r))]
        dropped = [r for r in records if r not in keep]
        if dropped:
            self.runtime.stats.add("filtered", self.name, len(dropped))
            self._delete(dropped)
        if keep:
            self._deliver(keep)
        return True

    def _receive(self) -> list[dict[str, Any]]:
        wanted = self.spec.batch_size
        deadline = time.monotonic() + self.spec.batching_window_s
        messages: list[dict[str, Any]] = []
        while len(messages) < wanted and not self._stop.is_set():
            resp = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, wanted - len(messages)),
                WaitTimeSeconds=0,
                AttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            got = resp.get("Messages", [])
            messages.extend(got)
            if not got:
                if not messages or time.monotonic() >= deadline:
                    break
                self._stop.wait(0.05)
            elif time.monotonic() >= deadline and len(got) < 10:
                break
        return messages

    def lambda_record(self, msg: dict[str, Any]) -> dict[str, Any]:
        record = {
            "messageId": msg["MessageId"],
            "receiptHandle": msg["ReceiptHandle"],
            "body": msg.get("Body", ""),
            "attributes": dict(msg.get("Attributes", {})),
            "messageAttributes": {
                name: {
                    "stringValue": a.get("StringValue"),
                    "binaryValue": a.get("BinaryValue"),
                    "stringListValues": a.get("StringListValues", []),
                    "binaryListValues": a.get("BinaryListValues", []),
                    "dataType": a.get("DataType"),
                }
                for name, a in msg.get("MessageAttributes", {}).items()
            },
            "md5OfBody": msg.get("MD5OfBody"),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": self.region,
        }
        if msg.get("MD5OfMessageAttributes"):
            record["md5OfMessageAttributes"] = msg["MD5OfMessageAttributes"]
        return record

    def _deliver(self, records: list[dict[str, Any]]) -> None:
        self.runtime.stats.add("records", self.name, len(records))
        try:
            result = self.runtime.invoke(self.spec.function_id, {"Records": records})
        except Exception as exc:
            log.info(
                "queue %s: %s raised %s; the batch returns after the visibility timeout",
                self.name,
                self.spec.function_id,
                exc,
            )
            self.runtime.stats.add("retries", self.name, len(records))
            return
        failed = self._failed_ids(result, records)
        if failed:
            self.runtime.stats.add("retries", self.name, len(failed))
        self._delete([r for r in records if r["messageId"] not in failed])

    def _failed_ids(self, result: Any, records: list[dict[str, Any]]) -> set[str]:
        if not self.spec.report_batch_item_failures or not isinstance(result, dict):
            return set()
        ids = {r["messageId"] for r in records}
        failed: set[str] = set()
        for item in result.get("batchItemFailures") or []:
            ident = item.get("itemIdentifier") if isinstance(item, dict) else None
            if not ident or ident not in ids:
                log.warning("queue %s: invalid itemIdentifier %r fails the whole batch", self.name, ident)
                return ids
            failed.add(ident)
        return failed

    def _delete(self, records: list[dict[str, Any]]) -> None:
        for start in range(0, len(records), 10):
            chunk = records[start : start + 10]
            entries = [{"Id": str(i), "ReceiptHandle": r["receiptHandle"]} for i, r in enumerate(chunk)]
            self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
