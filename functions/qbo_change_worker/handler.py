"""Ledger stream (notice INSERTs) → ChangeService: ledger facts + platform callbacks. Glue only."""

from __future__ import annotations

import contextlib
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.adapters.callbacks import CallbackQueue
from shared.adapters.dynamo import NoticeItem, save_all
from shared.adapters.notices import notice_from_item
from shared.domain.qbo_notices import Notice
from shared.observability import count, logger, metrics, tracer
from shared.services.qbo_changes import ChangeService
from shared.services.qbo_factory import default_client_factory

processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


@lru_cache(maxsize=1)
def service() -> ChangeService:
    return ChangeService(default_client_factory, callbacks=CallbackQueue())


# This invocation's notices, their outcomes set, written back in batch writes when it ends (records run one at a
# time).
MARKS: list[NoticeItem] = []


def record_handler(record: DynamoDBRecord) -> None:
    item = NoticeItem.from_raw_data(record.raw_event["dynamodb"]["NewImage"])
    notice = notice_from_item(item)
    logger().append_keys(realm_id=notice.realm_id, entity=notice.entity, entity_id=notice.entity_id)
    outcome = service().handle(notice)
    item.outcome = outcome
    MARKS.append(item)
    count("QboNoticeOutcome", outcome=outcome)


def _notices(event: dict[str, Any]) -> list[Notice]:
    """The batch's notices, for reading ahead (a malformed record is left to its record handler to report)."""
    found = []
    for record in event.get("Records") or []:
        with contextlib.suppress(Exception):
            found.append(notice_from_item(NoticeItem.from_raw_data(record["dynamodb"]["NewImage"])))
    return found


@logger().inject_lambda_context(clear_state=True)
@metrics().log_metrics
@tracer().capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    MARKS.clear()
    try:
        with service().prefetched(_notices(event)):
            return process_partial_response(
                event=event, record_handler=record_handler, processor=processor, context=context
            )
    finally:
        save_all(NoticeItem, MARKS)
