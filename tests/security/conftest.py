"""Fixtures for the security suite: the real ingest handler on in-process moto, a signed poster, and
ledger counts (to prove nothing is stored from a rejected request).

The handler-level fixtures are the integration suite's own (imported, not copied), so the hostile-input
tests exercise exactly what the rest of the suite does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.conftest import BASE_ENV, table_definition
from tests.integration.conftest import (  # noqa: F401  (fixtures re-exported for this package)
    Answer,
    Poster,
    TenantKeys,
    handler_send,
    make_poster,
    new_tenant,
    post,
    reset_caches,
    tenant,
    webhook,
)


@pytest.fixture(scope="module")
def _module_moto() -> Iterator[dict[str, str]]:
    """One in-process moto (ledger table, queues) per test module: creating it per test costs ~0.5 s, and
    every test here makes its own tenant, so tests cannot see each other's data anyway."""
    from moto import mock_aws

    from shared.adapters import dynamo
    from shared.config import reset_settings_cache

    with pytest.MonkeyPatch.context() as mp, mock_aws():
        for k in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL")]:
            mp.delenv(k)
        for k, v in BASE_ENV.items():
            mp.setenv(k, v)
        boto3.client("dynamodb").create_table(**table_definition())
        sqs = boto3.client("sqs")
        urls = {n: sqs.create_queue(QueueName=n)["QueueUrl"] for n in ("DeadLetterQueue", "CallbackQueue")}
        mp.setenv("DLQ_URL", urls["DeadLetterQueue"])
        mp.setenv("CALLBACK_QUEUE_URL", urls["CallbackQueue"])
        reset_settings_cache()
        dynamo.reset_binding()
        yield {**BASE_ENV, "DLQ_URL": urls["DeadLetterQueue"], "CALLBACK_QUEUE_URL": urls["CallbackQueue"]}
        reset_settings_cache()
        dynamo.reset_binding()


@pytest.fixture
def moto_aws(_module_moto: dict[str, str]) -> dict[str, str]:
    """Overrides the suite's per-test moto with the module's (see ``_module_moto``)."""
    return _module_moto


def event_count() -> int:
    """How many event items the ledger holds (all tenants), read consistently."""
    from shared.adapters.dynamo import EventItem, bind_table

    bind_table()
    return sum(1 for _ in EventItem.scan(EventItem.rtype == "event", consistent_read=True))


def ledger_size() -> int:
    """Every item of the ledger table (events, objects, tenants, anything), read from in-process moto's
    backend: O(1) in API calls, so thousands of fuzz cases can each check that nothing was written."""
    return len(_moto_table())


def stored_ids(tenant_id: str, event_ids: list[str]) -> set[str]:
    """Which of ``event_ids`` the ledger holds for ``tenant_id``."""
    from shared.adapters.dynamo import EventItem, bind_table
    from shared.adapters.event_store import event_pk

    bind_table()
    found = set()
    for eid in event_ids:
        try:
            EventItem.get(event_pk(tenant_id, eid), "EVT", consistent_read=True)
        except EventItem.DoesNotExist:
            continue
        found.add(eid)
    return found


def _moto_table() -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    from shared.config import get_settings

    settings = get_settings()
    return dynamodb_backends[DEFAULT_ACCOUNT_ID][settings.aws_region].get_table(settings.ledger_table)


@pytest.fixture
def fuzz_ledger(webhook: Any) -> Any:  # noqa: F811
    """The webhook on a ledger tuned for thousands of cases: moto deep-copies the whole table (stream
    records included) once per item of every transaction, so with stream recording on, each accepted batch
    costs more than the last. Nothing consumes the stream in these tests, so recording is switched off."""
    _moto_table().stream_shard = None
    return webhook


@pytest.fixture
def send(webhook: Any) -> Any:  # noqa: F811
    """``send(method, path, body, headers) -> (status, raw body)`` straight into the booking webhook handler."""
    return handler_send(webhook)


def forget_events(tenant_id: str, event_ids: list[str]) -> None:
    """Delete accepted events again. moto copies the whole table for every transaction, so a fuzz run that
    let accepted batches pile up would slow down quadratically; each case starts from a small ledger."""
    from shared.adapters.dynamo import EventItem, bind_table
    from shared.adapters.event_store import event_pk

    bind_table()
    for eid in set(event_ids):
        EventItem(event_pk(tenant_id, eid), "EVT").delete()
