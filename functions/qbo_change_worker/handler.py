"""Ledger stream (notice INSERTs) → ChangeService: ledger facts + platform callbacks. Glue only."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.adapters.callbacks import CallbackQueue
from shared.adapters.dynamo import NoticeItem
from shared.adapters.notices import NoticeStore, notice_from_item
from shared.observability import count, logger, metrics, tracer
from shared.services.qbo_changes import ChangeService
from shared.services.qbo_factory import default_client_factory

processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


@lru_cache(maxsize=1)
def service() -> ChangeService:
    return ChangeService(default_client_factory, callbacks=CallbackQueue())


@lru_cache(maxsize=1)
def notices() -> NoticeStore:
    return NoticeStore()


def record_handler(record: DynamoDBRecord) -> None:
    notice = notice_from_item(NoticeItem.from_raw_data(record.raw_event["dynamodb"]["NewImage"]))
    logger().append_keys(realm_id=notice.realm_id, entity=notice.entity, entity_id=notice.entity_id)
    outcome = service().handle(notice)
    notices().mark(notice, outcome)
    count("QboNoticeOutcome", outcome=outcome)


@logger().inject_lambda_context(clear_state=True)
@metrics().log_metrics
@tracer().capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
