"""Ledger stream → sync engine. Event records are applied to desired state; dirty objects are reconciled."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.adapters.dynamo import EventItem
from shared.observability import logger, metrics, tracer
from shared.services.qbo_factory import default_client_factory
from shared.services.sync import SyncService

processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
_service: SyncService | None = None


def service() -> SyncService:
    global _service  # noqa: PLW0603 - one engine per container (caches refs, clients, tenants)
    if _service is None:
        _service = SyncService(default_client_factory)
    return _service


def record_handler(record: DynamoDBRecord) -> None:
    image = record.raw_event["dynamodb"]["NewImage"]
    if image["rtype"]["S"] == "event":
        service().apply_event(EventItem.from_raw_data(image))
    else:
        service().reconcile(image["tenant_id"]["S"], image["object_key"]["S"])


@logger().inject_lambda_context(clear_state=True)
@metrics().log_metrics
@tracer().capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
