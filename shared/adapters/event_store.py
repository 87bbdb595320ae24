"""EventStore: writes accepted booking events as ``event`` items of the ledger table.

Keys (see ``shared.adapters.dynamo``): pk ``EVT#{tenant}#{event_id}``, sk ``EVT``; gsi1 groups an object's
events by version (``OBJ#{tenant}#{object_key}`` / ``{version:020d}#{event_id}``). Every put is conditional
on the item not existing, so an event id is stored once; a batch goes in one TransactWriteItems so it is
all-or-nothing. The stream carries each new item to the sync worker, which applies it to the object's
desired state. This module never writes object items.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pynamodb.connection import Connection
from pynamodb.exceptions import PutError, TransactWriteError
from pynamodb.transactions import TransactWrite

from shared.adapters.dynamo import EventItem, bind_table
from shared.adapters.objects import events_of
from shared.config import get_settings
from shared.domain.errors import RetryableError
from shared.domain.ingest import StoredEvent

# Cancellation / error codes that mean "try again shortly" (another writer, throttling), not "bad request".
_TRANSIENT = frozenset(
    {
        "TransactionConflict",
        "TransactionInProgressException",
        "ThrottlingError",
        "ThrottlingException",
        "ProvisionedThroughputExceeded",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "InternalServerError",
    }
)
_ATTEMPTS = 4


def event_pk(tenant_id: str, event_id: str) -> str:
    return f"EVT#{tenant_id}#{event_id}"


class EventStore:
    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        bind_table()
        self._clock = clock
        self._connection = Connection(region=get_settings().aws_region)

    def insert_all(self, events: Sequence[StoredEvent]) -> dict[str, str]:
        """Insert every event or none. See ``shared.domain.ingest.EventWriter``.

        Raises RetryableError when DynamoDB keeps answering with throttling or transaction conflicts.
        """
        received_at = self._clock().isoformat()
        items = [_to_item(e, received_at) for e in events]
        for attempt in range(_ATTEMPTS):
            try:
                if len(items) == 1:
                    return self._put_one(items[0])
                return self._transact(items)
            except (TransactWriteError, PutError) as exc:
                if _code(exc) not in _TRANSIENT:
                    raise
            time.sleep(0.02 * 2**attempt + random.random() * 0.02)
        raise RetryableError("event store kept conflicting or throttling", suggested_fix="retry the request")

    def _put_one(self, item: EventItem) -> dict[str, str]:
        # One event: a conditional put costs half a transactional one.
        try:
            item.save(condition=EventItem.pk.does_not_exist())
        except PutError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            return self._hashes([item.event_id], [item], {})
        return {}

    def _transact(self, items: Sequence[EventItem]) -> dict[str, str]:
        try:
            with TransactWrite(connection=self._connection) as tx:
                for item in items:
                    tx.save(item, condition=EventItem.pk.does_not_exist(), return_values="ALL_OLD")
        except TransactWriteError as exc:
            reasons = exc.cancellation_reasons
            dup_ids: list[str] = []
            known: dict[str, str] = {}
            for item, reason in zip(items, reasons, strict=False):
                if reason is not None and reason.code == "ConditionalCheckFailed":
                    dup_ids.append(item.event_id)
                    sha = ((reason.raw_item or {}).get("body_sha256") or {}).get("S")
                    if isinstance(sha, str):
                        known[item.event_id] = sha
            if not dup_ids:
                raise
            return self._hashes(dup_ids, items, known)
        return {}

    def _hashes(self, dup_ids: list[str], items: Sequence[EventItem], known: dict[str, str]) -> dict[str, str]:
        """The stored body hashes of ``dup_ids`` (from the cancellation reasons, else read back)."""
        missing = [i for i in items if i.event_id in dup_ids and i.event_id not in known]
        if missing:
            for stored in EventItem.batch_get([(i.pk, i.sk) for i in missing], consistent_read=True):
                known[stored.event_id] = stored.body_sha256
        return known


def _to_item(stored: StoredEvent, received_at: str) -> EventItem:
    e = stored.event
    return EventItem(
        pk=event_pk(e.tenant_id, e.id),
        sk="EVT",
        rtype="event",
        gsi1pk=f"OBJ#{e.tenant_id}#{e.object_key}",
        gsi1sk=f"{e.version:020d}#{e.id}",
        tenant_id=e.tenant_id,
        event_id=e.id,
        type=e.type.value,
        object_key=e.object_key,
        version=e.version,
        occurred_at=e.occurred_at.astimezone(UTC).isoformat(),
        received_at=received_at,
        body_sha256=stored.body_sha256,
        data=e.data,
        phi_dropped=list(e.phi_dropped),
    )


def _code(exc: TransactWriteError | PutError) -> str:
    code: Any = exc.cause_response_code
    return code if isinstance(code, str) else ""


def events_of_object(tenant_id: str, object_key: str) -> list[dict[str, Any]]:
    """Every stored event of one source object, oldest version first (ops views, tests)."""
    bind_table()
    return [dict(r.attribute_values) for r in events_of(tenant_id, object_key) if r.rtype == "event"]
