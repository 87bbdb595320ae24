"""Reviewing the dead-letter queue: browse without losing messages, act on one, read stream batches back.

SQS has no "peek": browsing receives every visible message with a short visibility timeout and makes them
visible again at once (ChangeMessageVisibility 0). Acting on one message (redrive, delete) needs a fresh
receipt handle, so it browses, keeps the wanted one hidden while it is handled and releases the rest.

Lambda's on-failure records for stream batches name a shard and a sequence range, not the records; the
records themselves are read back from the stream (24 h retention) when still there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.adapters import aws
from shared.config import get_settings

BROWSE_VISIBILITY_S = 30


def _sqs() -> Any:
    return aws.client("sqs")


def _streams() -> Any:
    return aws.client("dynamodbstreams")


def reset_clients() -> None:
    aws.reset()


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    receipt_handle: str
    body: dict[str, Any]
    raw: str
    sent_at: str | None
    receive_count: int

    @property
    def type(self) -> str:
        if "DDBStreamBatchInfo" in self.body:
            return "stream_batch"
        return str(self.body.get("type") or "unknown")


class DeadLetterQueue:
    def __init__(self, queue_url: str | None = None) -> None:
        self.queue_url = queue_url or get_settings().dlq_url
        self._deleted: set[str] = set()

    def depth(self) -> dict[str, int]:
        attrs = _sqs().get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return {
            "visible": int(attrs.get("ApproximateNumberOfMessages", 0)),
            "in_flight": int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
        }

    def _receive_all(self, limit: int) -> list[DeadLetter]:
        seen: dict[str, DeadLetter] = {}
        empty_rounds = 0
        while len(seen) < limit and empty_rounds < 2:
            resp = _sqs().receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=BROWSE_VISIBILITY_S,
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
            )
            msgs = resp.get("Messages", [])
            if not msgs:
                empty_rounds += 1
                continue
            for m in msgs:
                seen[m["MessageId"]] = _letter(m)
        return list(seen.values())

    def _release(self, letters: list[DeadLetter]) -> None:
        for i in range(0, len(letters), 10):
            chunk = letters[i : i + 10]
            _sqs().change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0}
                    for n, m in enumerate(chunk)
                ],
            )

    def browse(self, limit: int = 500) -> list[DeadLetter]:
        """Up to ``limit`` messages, oldest first; they stay in the queue, visible again."""
        letters = self._receive_all(limit)
        self._release(letters)
        return sorted(letters, key=lambda m: (m.sent_at or "", m.message_id))

    @contextmanager
    def holding(self, message_ids: set[str] | None, limit: int = 500) -> Iterator[list[DeadLetter]]:
        """The wanted messages (all when ``message_ids`` is None), hidden from other readers while the caller
        works on them; everything not deleted meanwhile becomes visible again afterwards."""
        letters = self._receive_all(limit)
        wanted = [m for m in letters if message_ids is None or m.message_id in message_ids]
        others = [m for m in letters if m not in wanted]
        self._release(others)
        try:
            yield wanted
        finally:
            self._release([m for m in wanted if m.message_id not in self._deleted])

    def delete(self, letter: DeadLetter) -> None:
        _sqs().delete_message(QueueUrl=self.queue_url, ReceiptHandle=letter.receipt_handle)
        self._deleted.add(letter.message_id)


def _letter(m: dict[str, Any]) -> DeadLetter:
    raw = str(m.get("Body") or "")
    try:
        body = json.loads(raw)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    attrs = m.get("Attributes") or {}
    sent = attrs.get("SentTimestamp")
    sent_at = datetime.fromtimestamp(int(sent) / 1000, UTC).isoformat() if sent else None
    return DeadLetter(
        message_id=str(m["MessageId"]),
        receipt_handle=str(m["ReceiptHandle"]),
        body=body,
        raw=raw,
        sent_at=sent_at,
        receive_count=int(attrs.get("ApproximateReceiveCount", 1)),
    )


def stream_batch_keys(info: dict[str, Any], max_records: int = 1000) -> list[dict[str, Any]]:
    """The NewImage of every record of a failed stream batch (shard + sequence range), as far as the stream
    still holds them (24 h retention). Raises LookupError when the shard or records are gone."""
    arn, shard = info.get("streamArn"), info.get("shardId")
    start, end = info.get("startSequenceNumber"), info.get("endSequenceNumber")
    if not (arn and shard and start and end):
        raise LookupError("the record does not name a stream shard and sequence range")
    client = _streams()
    try:
        it = client.get_shard_iterator(
            StreamArn=arn, ShardId=shard, ShardIteratorType="AT_SEQUENCE_NUMBER", SequenceNumber=start
        )["ShardIterator"]
    except client.exceptions.ResourceNotFoundException as exc:
        raise LookupError("the stream shard is gone") from exc
    except client.exceptions.TrimmedDataAccessException as exc:
        raise LookupError("the records are past the stream's retention") from exc
    images: list[dict[str, Any]] = []
    for _ in range(50):
        if not it:
            break
        resp = client.get_records(ShardIterator=it, Limit=100)
        for rec in resp.get("Records", []):
            seq = int(rec["dynamodb"]["SequenceNumber"])
            if seq > int(end):
                return images
            image = rec["dynamodb"].get("NewImage") or rec["dynamodb"].get("Keys") or {}
            images.append(image)
            if len(images) >= max_records:
                return images
        if not resp.get("Records"):
            break
        it = resp.get("NextShardIterator")
    return images
