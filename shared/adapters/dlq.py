"""The dead-letter queue: permanent failures with everything needed to review and retry them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from shared.adapters import aws
from shared.adapters.dynamo import ObjectItem
from shared.config import get_settings


def _sqs() -> Any:
    return aws.client("sqs")


class DeadLetters:
    def __init__(self, queue_url: str | None = None) -> None:
        self.queue_url = queue_url or get_settings().dlq_url

    def send_failure(self, item: ObjectItem, error: dict[str, Any], version: int) -> None:
        """One message per permanent failure: the source object, the QBO fault and the suggested fix.

        The PHI-free desired state is included so the failure can be reviewed without the platform."""
        body = {
            "type": "sync_failure",
            "tenant_id": item.tenant_id,
            "object_key": item.object_key,
            "kind": item.kind,
            "version": version,
            "error": error,
            "qbo": item.qbo or {},
            "at": datetime.now(UTC).isoformat(),
        }
        if item.kind != "patient":  # patient rows hold names/e-mail: they stay home
            body["desired"] = item.desired
        _sqs().send_message(
            QueueUrl=self.queue_url,
            MessageBody=json.dumps(body, default=str),
            MessageAttributes={
                "type": {"DataType": "String", "StringValue": "sync_failure"},
                "tenant_id": {"DataType": "String", "StringValue": item.tenant_id},
            },
        )
