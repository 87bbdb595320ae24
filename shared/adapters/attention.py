"""Ops writes on source objects (conditional updates, never read-then-write):

* ``retry``: mark dirty again with a fresh attempt budget (the stream sends the object through the normal,
  exactly-once sync path; nothing here talks to QBO);
* ``move``: excluded / manual / manual_done, only from the states the domain allows and never while a
  worker holds the object's lease;
* ``link_customer``: store a patient's QBO customer link in ``qbo["customer"]`` (what the engine reads).

Reads that ops need beyond ObjectRepository: all objects of a tenant (a filtered scan: ops-only, paged).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, cast

from pynamodb.exceptions import UpdateError

from shared.adapters.dynamo import ObjectItem, bind_table, whole
from shared.adapters.objects import ObjectRepository, conditional_failed, now_iso, object_pk, status_index
from shared.domain.errors import Conflict, NotFound


def _not_leased() -> Any:
    return ObjectItem.lease_until.does_not_exist() | (ObjectItem.lease_until < int(time.time()))


class AttentionStore:
    def __init__(self) -> None:
        bind_table()

    def get(self, tenant_id: str, object_key: str) -> ObjectItem:
        """Raises NotFound."""
        try:
            return ObjectItem.get(object_pk(tenant_id, object_key), "OBJ", consistent_read=True)
        except ObjectItem.DoesNotExist as exc:
            raise NotFound(f"no object {object_key} for tenant {tenant_id}", field="object_key") from exc

    def by_status(self, status: str, tenant_id: str | None = None) -> Iterator[ObjectItem]:
        cond = ObjectItem.gsi1sk.startswith(f"{tenant_id}#") if tenant_id else None
        yield from whole(cast(Iterator[ObjectItem], ObjectItem.gsi1.query(f"STATUS#{status}", cond)))

    def of_tenant(self, tenant_id: str, kinds: Iterable[str] | None = None) -> Iterator[ObjectItem]:
        """Every object row of a tenant (a filtered scan: for ops reports, not for request paths)."""
        cond = (ObjectItem.rtype == "object") & (ObjectItem.tenant_id == tenant_id)
        wanted = set(kinds or ())
        for item in cast(Iterator[ObjectItem], ObjectItem.scan(cond)):
            if not wanted or item.kind in wanted:
                yield item

    def retry(self, item: ObjectItem, *, reason: str, allowed: Iterable[str]) -> None:
        """Dirty again, attempts reset, so the normal path runs it with a full retry budget.

        Raises Conflict if the object changed state or is being worked on."""
        statuses = sorted(set(allowed))
        try:
            item.update(
                actions=[
                    ObjectItem.dirty.set(True),
                    ObjectItem.attempts.set(0),
                    ObjectItem.next_attempt_at.remove(),
                    ObjectItem.status_reason.set(reason),
                    ObjectItem.updated_at.set(now_iso()),
                ],
                condition=ObjectItem.pk.exists() & ObjectItem.status.is_in(*statuses) & _not_leased(),
            )
        except UpdateError as exc:
            if conditional_failed(exc):
                raise Conflict(f"{item.object_key} changed meanwhile or is being synced", field="object_key") from exc
            raise

    def schedule_retry(self, item: ObjectItem, *, reason: str, due: str) -> None:
        """A failed object becomes ``retrying`` with a fresh attempt budget; the retry sweep wakes it at
        ``due``. Raises Conflict if it is no longer failed or is being synced."""
        actions: list[Any] = [
            ObjectItem.status.set("retrying"),
            ObjectItem.status_reason.set(reason),
            ObjectItem.attempts.set(0),
            ObjectItem.next_attempt_at.set(due),
            ObjectItem.gsi1pk.set("STATUS#retrying"),
            ObjectItem.gsi1sk.set(f"{item.tenant_id}#{now_iso()}"),
            ObjectItem.updated_at.set(now_iso()),
        ]
        try:
            item.update(actions=actions, condition=(ObjectItem.status == "failed") & _not_leased())
        except UpdateError as exc:
            if conditional_failed(exc):
                raise Conflict(f"{item.object_key} changed meanwhile or is being synced", field="object_key") from exc
            raise

    def move(self, item: ObjectItem, *, status: str, reason: str, from_status: str) -> None:
        """Set an ops status (excluded / manual / manual_done) if the object is still ``from_status``.

        Raises Conflict if it changed meanwhile or a worker holds it."""
        ts = now_iso()
        actions: list[Any] = [
            ObjectItem.status.set(status),
            ObjectItem.status_reason.set(reason),
            ObjectItem.updated_at.set(ts),
            ObjectItem.next_attempt_at.remove(),
        ]
        actions += status_index(status, item.tenant_id, ts)
        # Leaving a wait: the object is no longer woken by its prerequisite.
        actions += [ObjectItem.waiting_on.remove(), ObjectItem.gsi2pk.remove(), ObjectItem.gsi2sk.remove()]
        try:
            item.update(
                actions=actions,
                condition=(ObjectItem.status == from_status) & (ObjectItem.dirty == False) & _not_leased(),  # noqa: E712
            )
        except UpdateError as exc:
            if conditional_failed(exc):
                raise Conflict(f"{item.object_key} changed meanwhile or is being synced", field="object_key") from exc
            raise

    def link_customer(self, item: ObjectItem, link: dict[str, Any], *, reason: str, touch: bool) -> None:
        """Store the patient's QBO customer (unless the engine already created or linked one).

        Raises Conflict if the patient already has a customer or is being synced."""
        qbo = dict(item.qbo or {})
        qbo["customer"] = link
        actions: list[Any] = [
            ObjectItem.qbo.set(qbo),
            ObjectItem.status_reason.set(reason),
            ObjectItem.updated_at.set(now_iso()),
        ]
        if touch:
            actions.append(ObjectItem.dirty.set(True))
        try:
            item.update(
                actions=actions,
                condition=ObjectItem.pk.exists()
                & _not_leased()
                & (ObjectItem.qbo.does_not_exist() | _no_customer(item)),
            )
        except UpdateError as exc:
            if conditional_failed(exc):
                raise Conflict(
                    f"{item.object_key} already has a QuickBooks customer or is being synced", field="patient_id"
                ) from exc
            raise

    def touch(self, item: ObjectItem, *, reason: str) -> bool:
        """Mark dirty (any status) so the normal path re-runs the object. False if it vanished."""
        return ObjectRepository.touch_item(item, reason=reason)


def _no_customer(item: ObjectItem) -> Any:
    # The JSON attribute is stored as a string: compare with the value we read (optimistic concurrency).
    return ObjectItem.qbo == (item.qbo or {})
