"""ObjectRepository: the ledger rows of source objects (desired vs synced state), with leases.

Every state change is a conditional update: applying an event only if its version is newer, writing
sync results only while holding the object's lease. Attention states (waiting, retrying, failed, held,
manual) are indexed in ``gsi1`` (``STATUS#{status}``); synced / skipped / excluded rows leave the index.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from pynamodb.connection import Connection
from pynamodb.exceptions import DeleteError, PutError, TransactWriteError, UpdateError
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from shared.adapters.dynamo import EventItem, ObjectItem, ParkQueueItem, bind_table, read_keys, whole
from shared.config import get_settings

ATTENTION = {"waiting", "retrying", "failed", "held", "manual", "pending"}
LEASED = "LEASED"  # gsi1 partition of objects under a worker's lease (finish() moves them back out)
PARKED = "parked"  # lease owner of an object waiting in its realm's queue (ObjectRepository.park)
QUEUES = "PARKQUEUES"  # partition of the realms whose queue holds objects (ParkQueueItem)
TERMINAL = {"synced", "skipped", "excluded", "manual_done"}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def status_index(status: str, tenant_id: str, ts: str) -> list[Action]:
    """The gsi1 entry for ``status``: objects that need attention are listed by status; the others leave it."""
    if status in ATTENTION:
        return [ObjectItem.gsi1pk.set(f"STATUS#{status}"), ObjectItem.gsi1sk.set(f"{tenant_id}#{ts}")]
    return [ObjectItem.gsi1pk.remove(), ObjectItem.gsi1sk.remove()]


def park_partition(realm_id: str) -> str:
    return f"PARK#{realm_id}"


def object_pk(tenant_id: str, object_key: str) -> str:
    return f"OBJ#{tenant_id}#{object_key}"


def conditional_failed(exc: Exception) -> bool:
    cause = getattr(exc, "cause_response_code", None)
    return cause == "ConditionalCheckFailedException"


TRANSACT_MAX = 100  # items in one TransactWriteItems (DynamoDB's limit)
# An object that may join its realm's queue: there, dirty, and under no lease (no worker, not parked already).
_PARKABLE = ObjectItem.pk.exists() & (ObjectItem.dirty == True) & ObjectItem.lease_until.does_not_exist()  # noqa: E712


@dataclass(frozen=True)
class Apply:
    """An event to apply to its object's desired state; ``park`` (realm, TTL): the object joins the realm's queue
    in the same write."""

    event: EventItem
    lifecycle: str
    kind: str
    park: tuple[str, int] | None = None


class LeaseLost(Exception):
    """Another worker took the object (our lease expired); drop the work, it will be redone."""


def slot_intents(item: ObjectItem) -> dict[str, dict[str, Any]]:
    """The write intents in doubt, per slot (an object with several documents may have several)."""
    raw = item.intent or {}
    if "slot" in raw:  # a single intent written before intents were kept per slot
        return {str(raw["slot"]): raw}
    return dict(raw.get("slots") or {})


class ObjectRepository:
    def __init__(self) -> None:
        bind_table()
        self.owner = uuid.uuid4().hex[:12]
        # Private copies of a leased object handed to concurrent slot writers → (the object, its write lock).
        self._shared: dict[int, tuple[ObjectItem, threading.Lock]] = {}
        self._tx_connection: Connection | None = None

    # ---------------------------------------------------------------- events -> desired state
    def apply_event(self, event: EventItem, lifecycle: str, kind: str) -> bool:
        """Set the object's desired state from ``event`` if its version is newer. Returns False if stale."""
        item = ObjectItem(object_pk(event.tenant_id, event.object_key), "OBJ")
        return _update_if(item, *_applied(Apply(event, lifecycle, kind)))

    @staticmethod
    def apply_event_parked(event: EventItem, lifecycle: str, kind: str, realm_id: str, ttl_s: int) -> bool:
        """``apply_event`` that also parks the object in its realm's queue, in the same write (no stream record is
        delivered for it). False, having written nothing, if the event is stale or the object is under a lease
        (a worker, or the queue, has it): ``apply_event`` then does the rest."""
        item = ObjectItem(object_pk(event.tenant_id, event.object_key), "OBJ")
        return _update_if(item, *_applied(Apply(event, lifecycle, kind, (realm_id, ttl_s))))

    def apply_together(self, applies: Sequence[Apply]) -> list[str | None]:
        """Several events, each to a different object, in one ``TransactWriteItems``: one call instead of one per
        event (about a twentieth of the client CPU per event, which is most of an event's cost). Each event keeps
        its own condition (newer than the object's version; for a parked apply, no lease on the object).
        Returns what ``_transact`` does."""
        return self._transact([(a.event.tenant_id, a.event.object_key, *_applied(a)) for a in applies])

    def park_together(self, keys: Sequence[tuple[str, str]], realm_id: str, ttl_s: int) -> list[str | None]:
        """``park`` for several objects (tenant id, object key) in one ``TransactWriteItems``, each with park's
        condition. Returns what ``_transact`` does."""
        return self._transact([(t, k, _park_actions(t, k, realm_id, ttl_s), _PARKABLE) for t, k in keys])

    def _transact(self, updates: Sequence[tuple[str, str, list[Action], Any]]) -> list[str | None]:
        """Conditional updates of different objects (tenant id, object key, actions, condition) in one
        ``TransactWriteItems``. All or nothing: returns, per update, None if it was written, else why not:
        ``ConditionalCheckFailed`` (its own condition), ``TransactionConflict``, or ``Cancelled`` (fine, but the
        transaction was cancelled by another update)."""
        if len(updates) > TRANSACT_MAX:
            raise ValueError(f"at most {TRANSACT_MAX} updates in one transaction")
        try:
            with TransactWrite(connection=self._connection()) as tx:
                for tenant_id, object_key, actions, condition in updates:
                    tx.update(ObjectItem(object_pk(tenant_id, object_key), "OBJ"), actions=actions, condition=condition)
        except TransactWriteError as exc:
            reasons = exc.cancellation_reasons
            if not reasons:
                raise
            return [(r.code if r is not None else "Cancelled") for r in reasons]
        return [None] * len(updates)

    def _connection(self) -> Connection:
        if self._tx_connection is None:
            self._tx_connection = Connection(region=get_settings().aws_region)
        return self._tx_connection

    def mark_event_outcome(self, event: EventItem, outcome: str) -> None:
        event.update(actions=[EventItem.outcome.set(outcome)])

    # ---------------------------------------------------------------- reads
    def get(self, tenant_id: str, object_key: str) -> ObjectItem | None:
        try:
            return ObjectItem.get(object_pk(tenant_id, object_key), "OBJ", consistent_read=True)
        except ObjectItem.DoesNotExist:
            return None

    def get_many(self, tenant_id: str, object_keys: Iterable[str]) -> dict[str, ObjectItem]:
        """Several objects in batch reads (100 keys a call), consistent like ``get``; missing keys are absent."""
        keys = [(object_pk(tenant_id, key), "OBJ") for key in object_keys]
        return {item.object_key: item for item in read_keys(ObjectItem, keys)}

    def by_status(self, status: str, *, tenant_id: str | None = None, limit: int | None = None) -> Iterator[ObjectItem]:
        cond = ObjectItem.gsi1sk.startswith(f"{tenant_id}#") if tenant_id else None
        yield from whole(cast(Iterator[ObjectItem], ObjectItem.gsi1.query(f"STATUS#{status}", cond, limit=limit)))

    def expired_leases(self, now: int) -> Iterator[ObjectItem]:
        """Objects whose worker's lease ran out without a finish: the worker died mid-reconcile."""
        # The partition holds only in-flight objects; the item's own lease_until is the authority.
        leased = ObjectItem.gsi1.query(LEASED, filter_condition=ObjectItem.lease_until < now)
        yield from whole(cast(Iterator[ObjectItem], leased))

    def waiting_on(self, tenant_id: str, object_key: str) -> Iterator[ObjectItem]:
        yield from whole(cast(Iterator[ObjectItem], ObjectItem.gsi2.query(f"WAIT#{tenant_id}#{object_key}")))

    # ---------------------------------------------------------------- lease
    def claim(
        self,
        tenant_id: str,
        object_key: str,
        lease_s: int = 120,
        *,
        only_dirty: bool = False,
        wake: str | None = None,
    ) -> ObjectItem | None:
        """Take the object's lease (None if another worker holds it or the object does not exist).

        ``only_dirty``: also None when the object has nothing left to do. Every write during a reconcile emits a
        stream record that still says dirty; this turns those late records into one cheap failed condition.
        ``wake``: mark it dirty for this reason in the same write (a waiting object taken by the worker whose
        object it waited on; ``touch`` without the trip through the stream).
        """
        item = ObjectItem(object_pk(tenant_id, object_key), "OBJ")
        now = int(time.time())
        condition = ObjectItem.pk.exists() & (ObjectItem.lease_until.does_not_exist() | (ObjectItem.lease_until < now))
        if only_dirty:
            condition = condition & (ObjectItem.dirty == True)  # noqa: E712 - a DynamoDB condition, not a bool test
        until = now + lease_s
        actions = [
            ObjectItem.lease_until.set(until),
            _owner_attr().set(self.owner),
            # Indexed while leased: if this worker dies, the retry sweep finds the object once the lease has run
            # out (stream records re-delivered meanwhile were consumed by failed claims).
            ObjectItem.gsi1pk.set(LEASED),
            ObjectItem.gsi1sk.set(f"{until:012d}#{tenant_id}#{object_key}"),
        ]
        if wake is not None:
            actions += _woken(wake)
        # pynamodb fills the item from the update's answer (ALL_NEW): no read needed.
        return item if _update_if(item, actions, condition) else None

    def _held(self) -> Any:
        return _owner_attr() == self.owner

    def update(self, item: ObjectItem, actions: list[Action]) -> None:
        """Write while holding the lease. Raises LeaseLost if the lease moved to another worker."""
        try:
            item.update(actions=[*actions, ObjectItem.updated_at.set(now_iso())], condition=self._held())
        except UpdateError as exc:
            if conditional_failed(exc):
                raise LeaseLost(item.object_key) from exc
            raise

    # ---------------------------------------------------------------- outcomes
    def record_slot(
        self, item: ObjectItem, slot: str, info: dict[str, Any] | None, *, clear_intent: bool = False
    ) -> None:
        """Store (or clear) the QBO document of a slot the moment it is known; ``clear_intent`` also clears the
        slot's write intent in the same write (the write it announced is now recorded)."""
        with self._writing(item) as target:
            qbo = dict(target.qbo or {})
            if info is None:
                qbo.pop(slot, None)
            else:
                qbo[slot] = info
            target.qbo = qbo
            actions: list[Action] = [ObjectItem.qbo.set(qbo)]
            if clear_intent:
                intents = {k: v for k, v in slot_intents(target).items() if k != slot}
                target.intent = {"slots": intents} if intents else None
                actions.append(ObjectItem.intent.set(target.intent) if intents else ObjectItem.intent.remove())
            self.update(target, actions)

    def record_intent(self, item: ObjectItem, slot: str, intent: dict[str, Any] | None) -> None:
        """Record (or clear, with None) the write intent of one slot: set before its QBO call, cleared after."""
        with self._writing(item) as target:
            intents = {k: v for k, v in slot_intents(target).items() if k != slot}
            if intent is not None:
                intents[slot] = intent
            value = {"slots": intents} if intents else None
            target.intent = value
            self.update(target, [ObjectItem.intent.set(value) if value is not None else ObjectItem.intent.remove()])

    @contextlib.contextmanager
    def copies_for_writers(self, item: ObjectItem, n: int) -> Iterator[list[ObjectItem]]:
        """``n`` private copies of a leased object, for threads that write its slots at once.

        A thread cannot read an item another thread writes: pynamodb resets every attribute of an item from the
        update's answer. So each thread reads its own copy; its slot and intent records are applied to ``item``
        one at a time under a lock (slots and intents are stored whole, so no write may start from a stale
        value) and the result is copied back to the thread's copy. ``item`` is current when this returns."""
        lock = threading.Lock()
        copies = [ObjectItem.from_raw_data(item.serialize()) for _ in range(n)]
        for copy in copies:
            self._shared[id(copy)] = (item, lock)
        try:
            yield copies
        finally:
            for copy in copies:
                self._shared.pop(id(copy), None)

    @contextlib.contextmanager
    def _writing(self, item: ObjectItem) -> Iterator[ObjectItem]:
        shared = self._shared.get(id(item))
        if shared is None:
            yield item
            return
        owner, lock = shared
        with lock:
            yield owner
            item.qbo, item.intent = owner.qbo, owner.intent

    def finish(
        self,
        item: ObjectItem,
        *,
        status: str,
        version: int,
        reason: str | None = None,
        waiting_on: str | None = None,
        error: dict[str, Any] | None = None,
        synced: dict[str, Any] | None = None,
        next_attempt_at: str | None = None,
        attempts: int | None = None,
    ) -> None:
        """Release the lease with the outcome. ``dirty`` is cleared only if no newer version arrived meanwhile
        (the newer version's apply already set it, and its stream record brings the object back)."""
        ts = now_iso()
        actions: list[Action] = [
            ObjectItem.status.set(status),
            ObjectItem.lease_until.remove(),
            _owner_attr().remove(),
        ]
        actions.append(ObjectItem.status_reason.set(reason) if reason else ObjectItem.status_reason.remove())
        actions += status_index(status, item.tenant_id, ts)
        if waiting_on:
            actions += [
                ObjectItem.waiting_on.set(waiting_on),
                ObjectItem.gsi2pk.set(f"WAIT#{item.tenant_id}#{waiting_on}"),
                ObjectItem.gsi2sk.set(item.object_key),
            ]
        else:
            actions += [
                ObjectItem.waiting_on.remove(),
                ObjectItem.gsi2pk.remove(),
                ObjectItem.gsi2sk.remove(),
            ]
        actions.append(ObjectItem.last_error.set(error) if error else ObjectItem.last_error.remove())
        if synced is not None:
            actions += [ObjectItem.synced.set(synced), ObjectItem.synced_version.set(version)]
        if next_attempt_at:
            actions.append(ObjectItem.next_attempt_at.set(next_attempt_at))
        else:
            actions.append(ObjectItem.next_attempt_at.remove())
        if attempts is not None:
            actions.append(ObjectItem.attempts.set(attempts))
        try:
            item.update(
                actions=[*actions, ObjectItem.dirty.set(False), ObjectItem.updated_at.set(ts)],
                condition=self._held() & (ObjectItem.desired_version == version),
            )
        except UpdateError as exc:
            if not conditional_failed(exc):
                raise
            # A newer version arrived (or the lease moved): record the outcome but leave dirty as it is.
            self.update(item, actions)

    # ---------------------------------------------------------------- a realm's queue (fairness)
    @staticmethod
    def park(tenant_id: str, object_key: str, realm_id: str, ttl_s: int) -> bool:
        """Hold a dirty object back in its realm's queue (``gsi2`` ``PARK#{realm}``, oldest first) instead of
        reconciling it now. It is leased to ``PARKED``, so the stream filter does not deliver it; ``unpark`` hands
        it back to the stream, and if nothing does within ``ttl_s`` the retry sweep takes it back like any expired
        lease. False if it is gone, clean, or under a lease (a worker is on it)."""
        item = ObjectItem(object_pk(tenant_id, object_key), "OBJ")
        return _update_if(item, _park_actions(tenant_id, object_key, realm_id, ttl_s), _PARKABLE)

    @staticmethod
    def unpark(realm_id: str, n: int) -> int:
        """Hand the realm's ``n`` oldest parked objects back to the stream (each write is a new record that the
        filter delivers: dirty, no lease). Returns how many went back."""
        partition = park_partition(realm_id)
        released = 0
        # Read n at a time; left-over entries (see _hand_back) are skipped, so the queue is read on until n go back.
        for item in whole(cast(Iterator[ObjectItem], ObjectItem.gsi2.query(partition, page_size=n)), chunk=n):
            released += _hand_back(item, partition)
            if released >= n:
                break
        return released

    @staticmethod
    def queue_moved(realm_id: str, *, released: bool, parked: bool) -> None:
        """Note the realm's queue: objects handed back from it now (``released``: it moved) and/or parked in it
        (``parked``). Parks alone leave ``moved_at`` as it was (set once, when the entry is created), so a queue
        that keeps taking objects while none goes back is one the retry sweep restarts."""
        now = int(time.time())
        moved = ParkQueueItem.moved_at.set(now if released else ParkQueueItem.moved_at | now)
        actions: list[Action] = [ParkQueueItem.rtype.set("parkqueue"), moved]
        if parked:
            actions.append(ParkQueueItem.parked_at.set(now))
        ParkQueueItem(QUEUES, realm_id).update(actions=actions)

    @staticmethod
    def queues() -> dict[str, ParkQueueItem]:
        """Every realm whose queue holds (or lately held) objects, by realm."""
        return {q.sk: q for q in ParkQueueItem.query(QUEUES)}

    @staticmethod
    def queued(realm_id: str) -> int:
        """How many objects wait in the realm's queue (its index entries: one per parked object)."""
        return int(ObjectItem.gsi2.count(park_partition(realm_id)))

    @staticmethod
    def forget_queue(queue: ParkQueueItem) -> bool:
        """Drop an empty queue's entry, unless objects were parked in it or handed back since ``queue`` was read."""
        parked = ParkQueueItem.parked_at
        unchanged = (parked == queue.parked_at) if queue.parked_at else parked.does_not_exist()
        try:
            queue.delete(condition=(ParkQueueItem.moved_at == queue.moved_at) & unchanged)
        except DeleteError as exc:
            if not conditional_failed(exc):
                raise
            return False
        return True

    def touch(self, item: ObjectItem, *, reason: str) -> bool:
        """Mark an object dirty again (wake a waiting / held / retrying object). False if it vanished."""
        return self.touch_item(item, reason=reason)

    @staticmethod
    def touch_item(item: ObjectItem, *, reason: str) -> bool:
        """``touch`` without a repository instance (ops actions use it too).

        An object left under a dead worker's expired lease loses that lease too: the sync worker's stream filter
        holds back records of leased objects, so a touch alone would leave it dirty and never delivered."""
        actions = _woken(reason)
        expired = ObjectItem.lease_until < int(time.time())
        attempts: list[tuple[list[Action], Any]] = [
            (actions, ObjectItem.lease_until.does_not_exist()),  # the usual case: one write
            ([*actions, ObjectItem.lease_until.remove(), _owner_attr().remove()], expired),
            (actions, None),  # a live worker holds it and is reconciling it now
        ]
        for update, lease_condition in attempts:
            condition = ObjectItem.pk.exists() if lease_condition is None else ObjectItem.pk.exists() & lease_condition
            if _update_if(item, update, condition):
                return True
        return False

    @staticmethod
    def reclaim(item: ObjectItem, *, reason: str) -> bool:
        """Take back an object whose worker died under its lease: drop the expired lease and mark it dirty.

        Dropping the lease matters: the sync worker's stream filter holds back records of leased objects, so a
        touch alone would leave the object dirty forever. False if the object vanished or another worker claimed
        it since ``item`` was read (its lease is no longer the expired one)."""
        ts = now_iso()
        actions: list[Action] = [
            ObjectItem.dirty.set(True),
            ObjectItem.status_reason.set(reason),
            ObjectItem.updated_at.set(ts),
            ObjectItem.lease_until.remove(),
            _owner_attr().remove(),
        ]
        actions += status_index(item.status, item.tenant_id, ts)
        if item.lease_owner == PARKED:  # its realm's queue did not hand it back in time: it leaves the queue
            actions += [ObjectItem.gsi2pk.remove(), ObjectItem.gsi2sk.remove()]
        return _update_if(item, actions, ObjectItem.lease_until == item.lease_until)

    def ensure(self, tenant_id: str, object_key: str, kind: str) -> None:
        """Create an empty row for an object known only by reference (e.g. a patient with no event yet)."""
        try:
            ObjectItem(
                object_pk(tenant_id, object_key),
                "OBJ",
                rtype="object",
                tenant_id=tenant_id,
                object_key=object_key,
                kind=kind,
                desired={},
                desired_version=-1,
                status="pending",
                updated_at=now_iso(),
            ).save(condition=ObjectItem.pk.does_not_exist())
        except PutError as exc:
            if not conditional_failed(exc):
                raise


def _owner_attr() -> Any:
    return ObjectItem.lease_owner


def _update_if(item: ObjectItem, actions: list[Action], condition: Any) -> bool:
    """One conditional update; False, having written nothing, when its condition did not hold."""
    try:
        item.update(actions=actions, condition=condition)
    except UpdateError as exc:
        if conditional_failed(exc):
            return False
        raise
    return True


def _woken(reason: str) -> list[Action]:
    """Dirty again, with the reason shown to ops."""
    return [ObjectItem.dirty.set(True), ObjectItem.status_reason.set(reason), ObjectItem.updated_at.set(now_iso())]


def _applied(a: Apply) -> tuple[list[Action], Any]:
    """The write that applies ``a`` and its condition: newer than the object's version; when it also parks the
    object, no lease on it either."""
    if a.park is None:
        return _desired_actions(a.event, a.lifecycle, a.kind), _newer(a.event)
    actions = _desired_actions(a.event, a.lifecycle, a.kind) + _park_actions(
        a.event.tenant_id, a.event.object_key, *a.park
    )
    return actions, _newer(a.event) & ObjectItem.lease_until.does_not_exist()


def _desired_actions(event: EventItem, lifecycle: str, kind: str) -> list[Action]:
    return [
        ObjectItem.rtype.set("object"),
        ObjectItem.tenant_id.set(event.tenant_id),
        ObjectItem.object_key.set(event.object_key),
        ObjectItem.kind.set(kind),
        ObjectItem.desired.set(event.data),
        ObjectItem.desired_version.set(int(event.version)),
        ObjectItem.desired_event_id.set(event.event_id),
        ObjectItem.lifecycle.set(lifecycle),
        ObjectItem.dirty.set(True),
        ObjectItem.attempts.set(0),
        ObjectItem.updated_at.set(now_iso()),
        ObjectItem.status.set(ObjectItem.status | "pending"),
    ]


def _newer(event: EventItem) -> Any:
    return ObjectItem.pk.does_not_exist() | (ObjectItem.desired_version < int(event.version))


def _hand_back(item: ObjectItem, partition: str) -> bool:
    ts = now_iso()
    gone: list[Action] = [ObjectItem.gsi2pk.remove(), ObjectItem.gsi2sk.remove()]
    if item.lease_owner != PARKED:
        # Its park outlived the TTL and a touch took it back: only the queue entry is left over.
        with contextlib.suppress(UpdateError):
            item.update(actions=gone, condition=ObjectItem.gsi2pk == partition)
        return False
    actions = [*gone, ObjectItem.lease_until.remove(), _owner_attr().remove(), ObjectItem.updated_at.set(ts)]
    return _update_if(
        item,
        actions + status_index(item.status, item.tenant_id, ts),
        (_owner_attr() == PARKED) & (ObjectItem.lease_until == item.lease_until),
    )


def _park_actions(tenant_id: str, object_key: str, realm_id: str, ttl_s: int) -> list[Action]:
    """Lease the row to the realm's queue (the stream filter holds back leased rows) and list it there."""
    until = int(time.time()) + ttl_s
    return [
        ObjectItem.lease_until.set(until),
        _owner_attr().set(PARKED),
        ObjectItem.gsi1pk.set(LEASED),  # the retry sweep's safety net: an expired park is an expired lease
        ObjectItem.gsi1sk.set(f"{until:012d}#{tenant_id}#{object_key}"),
        ObjectItem.gsi2pk.set(park_partition(realm_id)),
        ObjectItem.gsi2sk.set(f"{now_iso()}#{tenant_id}#{object_key}"),
    ]


def events_of(tenant_id: str, object_key: str) -> Iterator[EventItem]:
    """The object's timeline, oldest version first."""
    yield from whole(cast(Iterator[EventItem], EventItem.gsi1.query(f"OBJ#{tenant_id}#{object_key}")))
