"""CallbackQueue (SQS) → signed POST to the tenant's callback URL. Failures stay on the queue (SQS retries
with its visibility timeout, then the DLQ after 5 receives). Glue only."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.adapters.callbacks import CallbackSender, Undeliverable
from shared.observability import count, logger, metrics, tracer

processor = BatchProcessor(event_type=EventType.SQS)


@lru_cache(maxsize=1)
def sender() -> CallbackSender:
    return CallbackSender()


def record_handler(record: SQSRecord) -> None:
    callback = json.loads(record.body)
    logger().append_keys(callback_id=callback.get("id"), tenant_id=callback.get("tenant_id"))
    try:
        sender().send(callback)
    except Undeliverable as why:
        logger().warning("callback dropped", extra={"reason": str(why)})
        count("CallbackDropped")
        return
    count("CallbackSent", type=str(callback.get("type")))


@logger().inject_lambda_context(clear_state=True)
@metrics().log_metrics
@tracer().capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
