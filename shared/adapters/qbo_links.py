"""Reverse index QBO document → the source object that owns it, and conditional writes of a slot's QBO facts.

Link item (RefItem model, ``rtype = "qbolink"``)::

    pk REALM#{realm}   sk QBOID#{entity}#{qbo_id}   data {tenant_id, object_key, slot[, also]}

The sync engine calls :func:`link` whenever it records a document in an object's ``qbo[slot]``
(``SyncService._remember``). A payment recorded in QuickBooks against several of our invoices has a slot on each
invoice's object, so its link names them all (:func:`link_all`: the first in the row's own fields, the others in
``also``), and a later change to the payment reaches every one. A document without a link is not (yet) qbsync's:
a QuickBooks user's own, or one of ours whose write is still being recorded (its notice is then our own change,
and a later edit of it is caught by the change-data-capture sweep once the link exists). There is no fallback
search: it would have to scan the whole ledger for each such notice (measured in the session-12 soak: a
change-worker invocation past its 60-s Timeout, rewriting every link of the realm's tenants).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pynamodb.exceptions import DeleteError, UpdateError

from shared.adapters.dynamo import ObjectItem, RefItem, bind_table, read_keys
from shared.adapters.objects import object_pk
from shared.domain.errors import RetryableError


@dataclass(frozen=True)
class Link:
    realm_id: str
    entity: str
    qbo_id: str
    tenant_id: str
    object_key: str
    slot: str


def _sk(entity: str, qbo_id: str) -> str:
    return f"QBOID#{entity}#{qbo_id}"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def link(realm: str, entity: str, qbo_id: str, tenant: str, object_key: str, slot: str) -> None:
    """Record that ``entity`` ``qbo_id`` in ``realm`` is ``tenant``'s ``object_key`` slot ``slot`` (idempotent)."""
    link_all(realm, entity, qbo_id, [(tenant, object_key, slot)])


def link_all(realm: str, entity: str, qbo_id: str, owners: Sequence[tuple[str, str, str]]) -> None:
    """Record that ``entity`` ``qbo_id`` is in each of ``owners`` (tenant, object key, slot), in one row
    (idempotent; the row is replaced whole)."""
    (tenant, object_key, slot), *others = owners
    bind_table()
    RefItem(
        f"REALM#{realm}",
        _sk(entity, str(qbo_id)),
        rtype="qbolink",
        entity=entity,
        key=str(qbo_id),
        qbo_id=str(qbo_id),
        data={"tenant_id": tenant, "object_key": object_key, "slot": slot, **({"also": others} if others else {})},
        fetched_at=_now_iso(),
    ).save()


def _links(realm: str, entity: str, qbo_id: str, item: RefItem) -> list[Link]:
    d = item.data or {}
    owners = [(d["tenant_id"], d["object_key"], d["slot"]), *d.get("also", [])]
    return [Link(realm, entity, qbo_id, str(t), str(k), str(s)) for t, k, s in owners]


def unlink(realm: str, entity: str, qbo_id: str) -> None:
    bind_table()
    try:
        RefItem(f"REALM#{realm}", _sk(entity, qbo_id)).delete(condition=RefItem.pk.exists())
    except DeleteError as exc:
        if exc.cause_response_code != "ConditionalCheckFailedException":
            raise


class QboLinks:
    def __init__(self) -> None:
        bind_table()

    def find(self, realm: str, entity: str, qbo_id: str) -> Link | None:
        """The (first) object that owns a QBO document, or None if qbsync does not know it."""
        return next(iter(self.find_all(realm, entity, qbo_id)), None)

    def find_all(self, realm: str, entity: str, qbo_id: str) -> list[Link]:
        """Every object that holds a QBO document (one, but for a QBO payment applied to several of our
        invoices); none if qbsync does not know it."""
        try:
            item = RefItem.get(f"REALM#{realm}", _sk(entity, qbo_id), consistent_read=True)
        except RefItem.DoesNotExist:
            return []
        return _links(realm, entity, qbo_id, item)

    def find_many(self, wanted: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str, str], list[Link]]:
        """``find_all`` for many (realm, entity, qbo_id) in batch reads; documents qbsync has no link for are left
        out."""
        keys = {(f"REALM#{realm}", _sk(entity, qbo_id)): (realm, entity, qbo_id) for realm, entity, qbo_id in wanted}
        return {keys[(i.pk, i.sk)]: _links(*keys[(i.pk, i.sk)], i) for i in read_keys(RefItem, keys)}


class ObjectSlots:
    """Reads and optimistic writes of an object's ``qbo`` map on behalf of QBO-side changes.

    Writes are conditional on the row being unchanged since it was read and on no sync worker holding its
    lease; otherwise RetryableError (the stream retries the notice, which then sees the new state).
    """

    def __init__(self) -> None:
        bind_table()

    def get(self, tenant_id: str, object_key: str) -> ObjectItem | None:
        try:
            return ObjectItem.get(object_pk(tenant_id, object_key), "OBJ", consistent_read=True)
        except ObjectItem.DoesNotExist:
            return None

    def get_many(self, wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], ObjectItem]:
        """Objects by (tenant, object_key) in consistent batch reads; missing ones are left out."""
        found = read_keys(ObjectItem, [(object_pk(tenant_id, key), "OBJ") for tenant_id, key in wanted])
        return {(i.tenant_id, i.object_key): i for i in found}

    def write(self, item: ObjectItem, qbo: dict[str, Any]) -> None:
        """Store the object's new ``qbo`` map. Raises RetryableError when the row moved on or is leased."""
        now = int(time.time())
        unchanged = (
            ObjectItem.updated_at == item.updated_at if item.updated_at else ObjectItem.updated_at.does_not_exist()
        )
        free = ObjectItem.lease_until.does_not_exist() | (ObjectItem.lease_until < now)
        try:
            item.update(
                actions=[ObjectItem.qbo.set(qbo), ObjectItem.updated_at.set(_now_iso())],
                condition=ObjectItem.pk.exists() & unchanged & free,
            )
        except UpdateError as exc:
            if exc.cause_response_code == "ConditionalCheckFailedException":
                raise RetryableError(
                    "the object changed or is being synced; the notice will be retried",
                    object_key=item.object_key,
                ) from exc
            raise
