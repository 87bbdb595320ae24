"""The ledger table: one DynamoDB table (single-table design) holding every qbsync record.

Item types (``rtype``) and keys::

    tenant      pk TENANT#{tenant}               sk TENANT     gsi1 REALM#{realm} / TENANT#{tenant}
    event       pk EVT#{tenant}#{event_id}       sk EVT        gsi1 OBJ#{tenant}#{object_key} / {version:020d}#{id}
    object      pk OBJ#{tenant}#{object_key}     sk OBJ        gsi1 STATUS#{status} / {tenant}#{updated_at} (attention)
                                                               gsi1 LEASED / {lease_until:012d}#{tenant}#{object_key}
                                                               gsi2 WAIT#{tenant}#{waiting_on} / {object_key}
                                                               gsi2 PARK#{realm} / {parked_at}#{tenant}#{object_key}
    connection  pk REALM#{realm}                 sk CONN
    notice      pk NOTICE#{realm}#{dedupe_key}   sk NOTICE
    ref         pk REALM#{realm}                 sk REF#{entity}#{key}
    lock/rate   pk REALM#{realm}                 sk LOCK#{name} | RATE
    oauthstate  pk OAUTHSTATE#{state}            sk STATE      (TTL)
    audit       pk AUDIT#{tenant}                sk {iso time}#{id}

The stream (NEW_AND_OLD_IMAGES) drives the workers; template.yaml filters on ``rtype`` (and ``dirty``).
Attribute names here are the contract with template.yaml's FilterCriteria and the tests in
tests/unit/test_template.py, which check that these models match the table definition.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from pynamodb.attributes import (
    BooleanAttribute,
    JSONAttribute,
    ListAttribute,
    NumberAttribute,
    UnicodeAttribute,
)
from pynamodb.indexes import GlobalSecondaryIndex, IncludeProjection, KeysOnlyProjection
from pynamodb.models import Model

from shared.config import get_settings


# The indexes hold keys, not copies of items (template.yaml): with ALL, every write to an indexed item was
# written twice, and an object under a lease is written a dozen times a reconcile. Readers of an index get the
# items themselves from the table with ``whole()``. gsi1 also projects ``lease_until``, which the expired-lease
# sweep filters on.
class Gsi1(GlobalSecondaryIndex["LedgerItem"]):  # type: ignore[no-untyped-call]
    class Meta:
        index_name = "gsi1"
        projection = IncludeProjection(["lease_until"])

    gsi1pk = UnicodeAttribute(hash_key=True)
    gsi1sk = UnicodeAttribute(range_key=True)


class Gsi2(GlobalSecondaryIndex["LedgerItem"]):  # type: ignore[no-untyped-call]
    class Meta:
        index_name = "gsi2"
        projection = KeysOnlyProjection()

    gsi2pk = UnicodeAttribute(hash_key=True)
    gsi2sk = UnicodeAttribute(range_key=True)


class LedgerItem(Model):
    """Base model: keys, indexes and attributes common to every item type.

    Every subclass declares its own ``gsi1``/``gsi2`` instances: pynamodb binds an index object to the
    last model class that declares it, so shared instances would return the wrong model from queries.
    """

    class Meta:
        table_name = "LedgerTable"  # replaced by bind_table() at first use
        region = "us-east-1"
        # Workers run up to SYNC_CONCURRENCY (≤ 100) threads on one client; pynamodb's default pool of 10
        # would open and discard a new connection for every call beyond the tenth.
        max_pool_connections = 128

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    rtype = UnicodeAttribute()
    gsi1pk = UnicodeAttribute(null=True)
    gsi1sk = UnicodeAttribute(null=True)
    gsi2pk = UnicodeAttribute(null=True)
    gsi2sk = UnicodeAttribute(null=True)
    expires_at = NumberAttribute(null=True)  # TTL (epoch seconds)
    gsi1 = Gsi1()
    gsi2 = Gsi2()


class TenantItem(LedgerItem):
    gsi1 = Gsi1()
    gsi2 = Gsi2()

    tenant_id = UnicodeAttribute()
    name = UnicodeAttribute()
    realm_id = UnicodeAttribute(null=True)
    status = UnicodeAttribute(default="active")
    signing_secret_id = UnicodeAttribute()
    callback_url = UnicodeAttribute(null=True)
    settings = JSONAttribute(default=dict)
    mappings = JSONAttribute(default=dict)
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute(null=True)


class EventItem(LedgerItem):
    gsi1 = Gsi1()
    gsi2 = Gsi2()

    tenant_id = UnicodeAttribute()
    event_id = UnicodeAttribute()
    type = UnicodeAttribute()
    object_key = UnicodeAttribute()
    version = NumberAttribute()
    occurred_at = UnicodeAttribute()
    received_at = UnicodeAttribute()
    body_sha256 = UnicodeAttribute()
    data = JSONAttribute()
    phi_dropped = ListAttribute(of=UnicodeAttribute, default=list)
    outcome = UnicodeAttribute(null=True)  # applied | stale (older than the object's version)


class ObjectItem(LedgerItem):
    gsi1 = Gsi1()
    gsi2 = Gsi2()

    """A source object's desired QBO state and what is synced (level-triggered reconcile)."""

    tenant_id = UnicodeAttribute()
    object_key = UnicodeAttribute()  # "{kind}:{id}"
    kind = UnicodeAttribute()
    realm_id = UnicodeAttribute(null=True)
    desired = JSONAttribute(default=dict)
    desired_version = NumberAttribute(default=-1)
    desired_event_id = UnicodeAttribute(null=True)
    lifecycle = UnicodeAttribute(default="active")
    dirty = BooleanAttribute(default=False)
    synced_version = NumberAttribute(default=-1)
    synced = JSONAttribute(null=True)  # fingerprint / last pushed document
    qbo = JSONAttribute(default=dict)  # {type, id, sync_token, doc_number, ...} per QBO document
    status = UnicodeAttribute(default="pending")
    status_reason = UnicodeAttribute(null=True)
    waiting_on = UnicodeAttribute(null=True)
    intent = JSONAttribute(null=True)  # write intent recorded before a QBO call
    attempts = NumberAttribute(default=0)
    next_attempt_at = UnicodeAttribute(null=True)
    lease_until = NumberAttribute(null=True)
    lease_owner = UnicodeAttribute(null=True)
    last_error = JSONAttribute(null=True)
    updated_at = UnicodeAttribute()


class ConnectionItem(LedgerItem):
    gsi1 = Gsi1()
    gsi2 = Gsi2()

    realm_id = UnicodeAttribute()
    status = UnicodeAttribute(default="connected")  # connected | needs_reconnect | disconnected
    secret_id = UnicodeAttribute()
    access_expires_at = NumberAttribute(null=True)
    refresh_expires_at = NumberAttribute(null=True)
    refresh_hard_expires_at = NumberAttribute(null=True)
    company = JSONAttribute(default=dict)  # CompanyInfo + Preferences summary
    token_version = NumberAttribute(default=0)
    last_sync_at = UnicodeAttribute(null=True)
    throttled_at = UnicodeAttribute(null=True)
    connected_at = UnicodeAttribute(null=True)
    updated_at = UnicodeAttribute(null=True)


class NoticeItem(LedgerItem):
    gsi1 = Gsi1()
    gsi2 = Gsi2()

    realm_id = UnicodeAttribute()
    dedupe_key = UnicodeAttribute()
    entity = UnicodeAttribute()
    entity_id = UnicodeAttribute()
    operation = UnicodeAttribute()
    occurred_at = UnicodeAttribute()
    source = UnicodeAttribute()  # webhook-legacy | webhook-cloudevents | cdc
    data = JSONAttribute(default=dict)
    received_at = UnicodeAttribute()
    outcome = UnicodeAttribute(null=True)


class RefItem(LedgerItem):
    gsi1 = Gsi1()
    gsi2 = Gsi2()

    entity = UnicodeAttribute()
    key = UnicodeAttribute()
    qbo_id = UnicodeAttribute()
    data = JSONAttribute(default=dict)
    fetched_at = UnicodeAttribute()


class LockItem(LedgerItem):
    gsi1 = Gsi1()
    gsi2 = Gsi2()

    owner = UnicodeAttribute(null=True)
    lock_until = NumberAttribute(default=0)
    tokens = NumberAttribute(null=True)
    batch_tokens = NumberAttribute(null=True)
    refilled_at = NumberAttribute(null=True)
    inflight = NumberAttribute(null=True)


class PaceLogItem(LedgerItem):
    """A realm's recent batch calls (``shared.adapters.qbo.pacing.DynamoPaceStore.admit``): each one's end time,
    or its start negated while it is in flight; ``ver`` orders the conditional rewrites."""

    gsi1 = Gsi1()
    gsi2 = Gsi2()

    # (pynamodb's stub types ``of`` as the elements' Python type, not their attribute class)
    calls = ListAttribute[float](of=NumberAttribute, default=list)  # type: ignore[arg-type]
    ver = NumberAttribute(default=0)


class OAuthStateItem(LedgerItem):
    gsi1 = Gsi1()
    gsi2 = Gsi2()

    tenant_id = UnicodeAttribute()
    created_at = UnicodeAttribute()
    used = BooleanAttribute(default=False)


class AuditItem(LedgerItem):
    gsi1 = Gsi1()
    gsi2 = Gsi2()

    tenant_id = UnicodeAttribute()
    actor = UnicodeAttribute()
    action = UnicodeAttribute()
    target = UnicodeAttribute()
    detail = JSONAttribute(default=dict)
    at = UnicodeAttribute()


class ParkQueueItem(LedgerItem):
    """A realm whose queue (``ObjectRepository.park``) holds objects: ``pk`` ``PARKQUEUES``, ``sk`` the realm. The
    retry sweep hands a share back to the stream from a queue that has handed nothing back for ``SYNC_PARK_STALL_S``."""

    gsi1 = Gsi1()
    gsi2 = Gsi2()

    # Epoch seconds: objects last handed back from it (first: when it was created). Parking into a queue does not
    # move it: a queue that only takes parks has stopped draining.
    moved_at = NumberAttribute(default=0)
    parked_at = NumberAttribute(default=0)  # epoch seconds: objects last parked in it


ALL_MODELS: tuple[type[LedgerItem], ...] = (
    LedgerItem,
    TenantItem,
    EventItem,
    ObjectItem,
    ConnectionItem,
    NoticeItem,
    RefItem,
    LockItem,
    PaceLogItem,
    OAuthStateItem,
    AuditItem,
    ParkQueueItem,
)

_bound: str | None = None
_bind_lock = threading.Lock()


L = TypeVar("L", bound="LedgerItem")
# How a batch of calls is run: the builtin ``map`` one after the other, a thread pool's ``map`` side by side.
Mapper = Callable[..., Iterable[Any]]


def whole(hits: Iterable[L], *, chunk: int = 100) -> Iterator[L]:
    """The items an index query found, read whole from the table (``read_keys``, ``chunk`` hits at a time so that
    a long query is read as it is consumed), in the index's order; an item deleted since the index listed it is
    left out."""
    batch: list[L] = []
    for hit in hits:
        batch.append(hit)
        if len(batch) == chunk:
            yield from read_keys(type(batch[0]), ((h.pk, h.sk) for h in batch))
            batch = []
    if batch:
        yield from read_keys(type(batch[0]), ((h.pk, h.sk) for h in batch))


def read_keys(model: type[L], keys: Iterable[tuple[str, str]]) -> list[L]:
    """Items by (pk, sk) in consistent batch reads (pynamodb sends 100 keys a call), in the keys' order; a key
    with no item is left out."""
    wanted = list(dict.fromkeys(keys))
    found = {(i.pk, i.sk): i for i in model.batch_get(wanted, consistent_read=True)}
    return [found[k] for k in wanted if k in found]


BATCH_WRITE_MAX = 25  # items in one BatchWriteItem (DynamoDB's limit)


def save_all(model: type[L], items: Iterable[L], map_: Mapper = map) -> None:
    """Write items whole in batch writes of 25. Stream images written back with their ``outcome`` are a MODIFY,
    which the INSERT-only stream filters of events and notices ignore. ``map_``: how the calls are run (a thread
    pool's ``map`` sends them side by side)."""
    rows = list(items)

    def write(chunk: list[L]) -> None:
        with model.batch_write() as batch:
            for item in chunk:
                batch.save(item)

    list(map_(write, [rows[i : i + BATCH_WRITE_MAX] for i in range(0, len(rows), BATCH_WRITE_MAX)]))


def bind_table() -> None:
    """Point every model at the configured table (once per container; cheap afterwards)."""
    global _bound  # noqa: PLW0603 - module-level binding, once per container
    name = get_settings().ledger_table
    if _bound == name:
        return
    with _bind_lock:
        if _bound == name:
            return
        for model in ALL_MODELS:
            model.Meta.table_name = name
            model.Meta.region = get_settings().aws_region
            # pynamodb caches a connection per model class; drop it so a new name/endpoint takes effect.
            model._connection = None
        _share_client()
        _bound = name


def _share_client() -> None:
    """Build the DynamoDB client once, here, for every model. pynamodb builds one per model class lazily, on
    first use: a worker's threads starting together would each build their own (tens of clients per model
    at cold start, each a costly botocore load). botocore clients are thread-safe."""
    client = ALL_MODELS[0]._get_connection().connection.client
    for model in ALL_MODELS[1:]:
        model._get_connection().connection._client = client


def reset_binding() -> None:
    """Tests and the local stack: forget the bound table and every model's connection (its endpoint)."""
    global _bound  # noqa: PLW0603
    _bound = None
    for model in ALL_MODELS:
        model._connection = None


def as_plain(item: LedgerItem) -> dict[str, Any]:
    """A JSON-compatible dict of an item's attributes (for ops views)."""
    return {k: v for k, v in item.attribute_values.items() if v is not None}
