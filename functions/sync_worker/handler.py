"""Ledger stream → sync engine. Event records are applied to desired state; dirty objects are reconciled.

Records of one batch are processed concurrently (``SYNC_CONCURRENCY`` threads) so that their QBO writes share
``/batch`` calls per realm; each object's exactly-once logic is unchanged (leases keep one worker per object).

Fairness: an invocation reconciles at most ``SYNC_REALM_SHARE`` objects of one realm. A realm's writes are paced by
QBO's limits (40 batch calls a minute), and the invocation returns only when all its records are done, so one
realm's backlog in a batch would hold up every other realm's records behind it. The realm's further records go
back to the stream's tail (``ObjectRepository.requeue``): they come round again after the records already waiting.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.adapters.dynamo import EventItem
from shared.adapters.objects import ObjectRepository
from shared.config import get_settings
from shared.observability import count, logger, metrics, tracer
from shared.services.qbo_factory import WORKERS, default_client_factory
from shared.services.sync import SyncService

processor = AsyncBatchProcessor(event_type=EventType.DynamoDBStreams)


@lru_cache(maxsize=1)
def service() -> SyncService:
    return SyncService(default_client_factory)  # one engine per container: caches refs, clients, tenants


@lru_cache(maxsize=1)
def pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=get_settings().sync_concurrency, thread_name_prefix="sync")


class RealmShares:
    """How many objects of each realm this invocation has taken (one invocation at a time per container)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken: Counter[str] = Counter()

    def reset(self) -> None:
        with self._lock:
            self._taken.clear()

    def admit(self, realm: str) -> bool:
        with self._lock:
            if self._taken[realm] >= get_settings().sync_realm_share:
                return False
            self._taken[realm] += 1
            return True


SHARES = RealmShares()


def process(record: DynamoDBRecord) -> None:
    image = record.raw_event["dynamodb"]["NewImage"]
    with WORKERS.worker():
        if image["rtype"]["S"] == "event":
            service().apply_event(EventItem.from_raw_data(image))
            return
        tenant_id, object_key = image["tenant_id"]["S"], image["object_key"]["S"]
        if not SHARES.admit(service().realm_of(tenant_id)):
            ObjectRepository.requeue(tenant_id, object_key)
            count("SyncRequeued")
            return
        service().reconcile(tenant_id, object_key)


async def record_handler(record: DynamoDBRecord) -> None:
    await asyncio.get_running_loop().run_in_executor(pool(), process, record)


@logger().inject_lambda_context(clear_state=True)
@metrics().log_metrics
@tracer().capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    SHARES.reset()
    return async_process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
