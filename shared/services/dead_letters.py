"""Dead-letter review: list, show, redrive (back through the normal path), delete.

A redrive never re-sends a QBO write. For a ``sync_failure`` message it marks the object dirty again
(attempts reset) so the sync worker reconciles it: the recorded intent and the read-back by DocNumber /
marker find a document whose write had in fact committed, so nothing is posted twice. For Lambda's
on-failure record of a stream batch, the batch's records are read back from the stream and re-applied
(events: applied to desired state if still newer; objects: marked dirty). A message already resolved
(its object synced that version since) is just deleted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shared.adapters.attention import AttentionStore
from shared.adapters.audit import AuditLog
from shared.adapters.dlq_review import DeadLetter, DeadLetterQueue, stream_batch_keys
from shared.adapters.dynamo import EventItem
from shared.adapters.objects import ObjectRepository
from shared.domain.errors import Conflict, NotFound
from shared.domain.event_types import EventType, lifecycle_for
from shared.domain.failures import phi_free
from shared.observability import count

RESOLVED = {"synced", "skipped", "excluded", "manual_done"}
ALL_STATUSES = {"pending", "synced", "skipped", "waiting", "retrying", "failed", "held", "excluded", "manual"}


def letter_view(m: DeadLetter, *, full: bool = False) -> dict[str, Any]:
    body = m.body
    view: dict[str, Any] = {
        "message_id": m.message_id,
        "type": m.type,
        "sent_at": m.sent_at,
        "receive_count": m.receive_count,
        "tenant_id": body.get("tenant_id"),
        "object_key": body.get("object_key"),
        "error": (body.get("error") or {}).get("message"),
        "suggested_fix": (body.get("error") or {}).get("suggested_fix"),
    }
    if m.type == "stream_batch":
        info = body.get("DDBStreamBatchInfo") or {}
        view.update(
            batch_size=info.get("batchSize"),
            function=(body.get("requestContext") or {}).get("functionArn"),
            condition=(body.get("requestContext") or {}).get("condition"),
        )
    if full:
        detail = dict(body)
        if "desired" in detail:
            detail["desired"] = phi_free(detail["desired"])
        view["body"] = detail
    return view


class DeadLetterService:
    def __init__(
        self,
        queue: DeadLetterQueue | None = None,
        store: AttentionStore | None = None,
        audit: AuditLog | None = None,
        objects: ObjectRepository | None = None,
    ) -> None:
        self.queue = queue or DeadLetterQueue()
        self.store = store or AttentionStore()
        self.audit = audit or AuditLog()
        self._objects = objects

    @property
    def objects(self) -> ObjectRepository:
        if self._objects is None:
            self._objects = ObjectRepository()
        return self._objects

    def letters(self, *, tenant_id: str | None = None, limit: int = 500) -> dict[str, Any]:
        letters = [m for m in self.queue.browse(limit) if not tenant_id or m.body.get("tenant_id") == tenant_id]
        by_type: dict[str, int] = {}
        for m in letters:
            by_type[m.type] = by_type.get(m.type, 0) + 1
        return {"depth": self.queue.depth(), "counts": by_type, "items": [letter_view(m) for m in letters]}

    def show(self, message_id: str) -> dict[str, Any]:
        """Raises NotFound."""
        for m in self.queue.browse():
            if m.message_id == message_id:
                return letter_view(m, full=True)
        raise NotFound(f"no dead letter {message_id} (redriven, deleted or in flight)", field="message_id")

    def delete(self, actor: str, message_ids: Iterable[str]) -> dict[str, Any]:
        wanted = set(message_ids)
        deleted: list[str] = []
        with self.queue.holding(wanted) as letters:
            for m in letters:
                self.queue.delete(m)
                deleted.append(m.message_id)
                self.audit.record(m.body.get("tenant_id"), actor, "dlq_delete", m.message_id, letter_view(m))
        missing = sorted(wanted - set(deleted))
        return {"deleted": deleted, "errors": {mid: "not found" for mid in missing}}

    def redrive(self, actor: str, message_ids: Iterable[str] | None = None, *, delete: bool = True) -> dict[str, Any]:
        """Redrive the given messages (all when None). Returns per-message outcomes."""
        wanted = set(message_ids) if message_ids is not None else None
        results: dict[str, dict[str, Any]] = {}
        with self.queue.holding(wanted) as letters:
            for m in letters:
                try:
                    outcome = self._redrive_one(m)
                except (LookupError, NotFound, Conflict, ValueError) as exc:
                    results[m.message_id] = {"ok": False, "error": str(getattr(exc, "message", exc))}
                    continue
                if delete:
                    self.queue.delete(m)
                results[m.message_id] = {"ok": True, "deleted": delete, **outcome}
                self.audit.record(
                    outcome.get("tenant_id") or m.body.get("tenant_id"),
                    actor,
                    "dlq_redrive",
                    m.message_id,
                    {"type": m.type, **outcome},
                )
        for mid in sorted((wanted or set()) - set(results)):
            results[mid] = {"ok": False, "error": "not found"}
        count("DeadLettersRedriven", sum(1 for r in results.values() if r.get("ok")))
        return {"results": results, "redriven": sum(1 for r in results.values() if r.get("ok"))}

    def _redrive_one(self, m: DeadLetter) -> dict[str, Any]:
        if m.type == "sync_failure":
            return self._redrive_object(
                str(m.body["tenant_id"]), str(m.body["object_key"]), int(m.body.get("version", -1))
            )
        if m.type == "stream_batch":
            return self._redrive_batch(m.body["DDBStreamBatchInfo"])
        raise ValueError(f"'{m.type}' messages are not redriven by qbsync ops; review and delete them")

    def _redrive_object(self, tenant_id: str, object_key: str, version: int) -> dict[str, Any]:
        item = self.store.get(tenant_id, object_key)
        if item.status in RESOLVED and not item.dirty and int(item.synced_version) >= version:
            return {"tenant_id": tenant_id, "object_key": object_key, "action": "already_resolved"}
        self.store.retry(item, reason="dead letter redriven", allowed=ALL_STATUSES)
        return {"tenant_id": tenant_id, "object_key": object_key, "action": "retried"}

    def _redrive_batch(self, info: dict[str, Any]) -> dict[str, Any]:
        images = stream_batch_keys(info)
        touched: list[str] = []
        skipped: list[str] = []
        tenant = None
        for image in images:
            rtype = (image.get("rtype") or {}).get("S")
            tenant = (image.get("tenant_id") or {}).get("S") or tenant
            if rtype == "event":
                event = EventItem.from_raw_data(image)
                kind = event.object_key.split(":", 1)[0]
                applied = self.objects.apply_event(event, lifecycle_for(EventType(event.type)), kind)
                if applied:
                    self.objects.mark_event_outcome(event, "applied")
                else:  # already applied (or stale): make sure its object is reconciled
                    self._touch(event.tenant_id, event.object_key)
                touched.append(event.object_key)
            elif rtype == "object":
                key = image["object_key"]["S"]
                self._touch(image["tenant_id"]["S"], key)
                touched.append(key)
            else:  # QBO change notices: the CDC sweep catches them up
                skipped.append(str((image.get("pk") or {}).get("S")))
        return {"tenant_id": tenant, "records": len(images), "objects": sorted(set(touched)), "skipped": skipped}

    def _touch(self, tenant_id: str, object_key: str) -> None:
        item = self.objects.get(tenant_id, object_key)
        if item is not None:
            self.store.touch(item, reason="dead letter redriven")
