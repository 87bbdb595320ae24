"""Shared fixtures: an in-process moto AWS with the ledger table and queues created from template.yaml."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from infra.template_check import load_template
from shared.lifecycle import reset_container_state

BASE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    "LEDGER_TABLE": "LedgerTable",
    "SECRETS_PREFIX": "qbsync",
    "POWERTOOLS_SERVICE_NAME": "qbsync",
    "POWERTOOLS_METRICS_NAMESPACE": "qbsync",
    "POWERTOOLS_DEV": "false",
    "QBO_ENVIRONMENT": "local",
}


def table_definition(logical_id: str = "LedgerTable") -> dict[str, Any]:
    """create_table kwargs for a table declared in template.yaml (the one source of its shape)."""
    props = load_template()["Resources"][logical_id]["Properties"]
    kwargs: dict[str, Any] = {
        "TableName": logical_id,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if "GlobalSecondaryIndexes" in props:
        kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    if "StreamSpecification" in props:
        kwargs["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
    return kwargs


def _reset_process_caches() -> None:
    """Per-container caches (settings, table binding, boto3 clients, secret values...) start fresh in each test."""
    reset_container_state()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    for k in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL")]:
        monkeypatch.delenv(k)
    for k, v in BASE_ENV.items():
        monkeypatch.setenv(k, v)
    _reset_process_caches()
    yield BASE_ENV
    _reset_process_caches()


@pytest.fixture
def moto_aws(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """In-process moto with the ledger table, the queues and the app secrets of template.yaml."""
    from moto import mock_aws
    from moto.core.botocore_stubber import BotocoreStubber

    # DynamoDB applies a conditional write atomically; moto's backends have no lock, so two threads could both
    # pass the same condition. One request at a time gives the tests the atomicity the real services have.
    serial, process = threading.Lock(), BotocoreStubber.process_request

    def one_at_a_time(self: BotocoreStubber, request: Any) -> Any:
        with serial:
            return process(self, request)

    monkeypatch.setattr(BotocoreStubber, "process_request", one_at_a_time)
    with mock_aws():
        ddb = boto3.client("dynamodb")
        ddb.create_table(**table_definition())
        sqs = boto3.client("sqs")
        urls = {name: sqs.create_queue(QueueName=name)["QueueUrl"] for name in ("DeadLetterQueue", "CallbackQueue")}
        monkeypatch.setenv("DLQ_URL", urls["DeadLetterQueue"])
        monkeypatch.setenv("CALLBACK_QUEUE_URL", urls["CallbackQueue"])
        reset_container_state()
        yield {**aws_env, "DLQ_URL": urls["DeadLetterQueue"], "CALLBACK_QUEUE_URL": urls["CallbackQueue"]}


@pytest.fixture(scope="module")
def emulator() -> Iterator[Any]:
    """A QBO emulator per test module (127.0.0.1, free port), driven through its control API."""
    from infra.qbo_emulator import EmulatorServer
    from infra.qbo_emulator.control import EmulatorControl

    server = EmulatorServer(port=0).start()
    try:
        yield EmulatorControl(server.url)
    finally:
        server.stop()
