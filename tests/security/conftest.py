"""Fixtures for the security suite: the real ingest handler on in-process moto, a signed poster, and
ledger counts (to prove nothing is stored from a rejected request).

The handler-level fixtures are the integration suite's own (imported, not copied), so the hostile-input
tests exercise exactly what the rest of the suite does.
"""

from __future__ import annotations

from typing import Any

import pytest

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
