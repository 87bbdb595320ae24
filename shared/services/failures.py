"""Failure review: list, show, retry, exclude, manual entry — every change audited with who made it.

Nothing here talks to QBO. A retry marks the object dirty (attempts reset); the ledger stream brings it to
the sync worker, whose intent + read-back path decides whether anything is written, so a retry can never
post twice. Exclude / manual entry take an object out of the failure list; manual entries form a to-do
list until marked done.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from shared.adapters.attention import AttentionStore
from shared.adapters.audit import AuditLog
from shared.adapters.dynamo import ObjectItem
from shared.adapters.objects import events_of
from shared.domain import failures as rules
from shared.domain.errors import BadRequest, Conflict, NotFound
from shared.observability import count

Clock = Callable[[], datetime]
MAX_BULK = 1000


def _now() -> datetime:
    return datetime.now(UTC)


def summary(item: ObjectItem) -> dict[str, Any]:
    err = dict(item.last_error or {})
    return {
        "tenant_id": item.tenant_id,
        "object_key": item.object_key,
        "object_kind": item.kind,
        "status": item.status,
        "failure_kind": rules.failure_kind(err),
        "message": err.get("message") or item.status_reason,
        "suggested_fix": err.get("suggested_fix"),
        "mapping": rules.mapping_key(err),
        "qbo_code": err.get("qbo_code"),
        "attempts": int(item.attempts or 0),
        "updated_at": item.updated_at,
        "reason": item.status_reason,
    }


class FailureService:
    def __init__(self, store: AttentionStore | None = None, audit: AuditLog | None = None, clock: Clock = _now):
        self.store = store or AttentionStore()
        self.audit = audit or AuditLog()
        self.clock = clock

    # ------------------------------------------------------------------ reads
    def select(
        self,
        *,
        tenant_id: str | None = None,
        kind: str | None = None,
        object_kind: str | None = None,
        older_than: str | None = None,
        status: str = "failed",
    ) -> list[ObjectItem]:
        """Objects in ``status`` matching the filters, oldest first. Raises BadRequest for a bad age."""
        age = rules.parse_age(older_than)
        now = self.clock()
        out = []
        for item in self.store.by_status(status, tenant_id):
            if item.status != status:  # the index is eventually consistent
                continue
            if object_kind and item.kind != object_kind:
                continue
            if kind and rules.failure_kind(item.last_error) != kind:
                continue
            if not rules.older_than(item.updated_at, age, now):
                continue
            out.append(item)
        return sorted(out, key=lambda i: i.updated_at)

    def failures(self, *, limit: int = 500, **filters: Any) -> dict[str, Any]:
        items = self.select(**filters)
        counts = Counter(rules.failure_kind(i.last_error) for i in items)
        return {
            "total": len(items),
            "counts": dict(sorted(counts.items())),
            "items": [summary(i) for i in items[:limit]],
        }

    def todo(self, tenant_id: str | None = None) -> dict[str, Any]:
        """The manual-entry to-do list: objects someone must key into QuickBooks by hand."""
        items = self.select(tenant_id=tenant_id, status="manual")
        return {"total": len(items), "items": [{**summary(i), "payload": rules.phi_free(i.desired)} for i in items]}

    def show(self, tenant_id: str, object_key: str) -> dict[str, Any]:
        """Everything needed to decide: timeline, QBO fault, attempts, PHI-free payload, the fix. Raises NotFound."""
        item = self.store.get(tenant_id, object_key)
        err = dict(item.last_error or {})
        timeline = [
            {
                "event_id": e.event_id,
                "type": e.type,
                "version": int(e.version),
                "occurred_at": e.occurred_at,
                "received_at": e.received_at,
                "outcome": e.outcome,
            }
            for e in events_of(tenant_id, object_key)
        ]
        return {
            **summary(item),
            "lifecycle": item.lifecycle,
            "desired_version": int(item.desired_version),
            "synced_version": int(item.synced_version),
            "dirty": bool(item.dirty),
            "waiting_on": item.waiting_on,
            "next_attempt_at": item.next_attempt_at,
            "error": {
                "kind": err.get("kind"),
                "error": err.get("error"),
                "message": err.get("message"),
                "suggested_fix": err.get("suggested_fix"),
                "qbo_code": err.get("qbo_code"),
                "qbo_detail": err.get("qbo_detail"),
                "intuit_tid": err.get("intuit_tid"),
                "http_status": err.get("http_status"),
                "attempts": err.get("attempts"),
                "mapping": err.get("mapping"),
            },
            "payload": rules.phi_free(item.desired),
            "qbo": dict(item.qbo or {}),
            "timeline": timeline,
            "audit": [a for a in self.audit.entries(tenant_id, limit=200) if a["target"] == object_key],
        }

    def audit_log(self, tenant_id: str | None, limit: int = 100) -> list[dict[str, Any]]:
        return self.audit.entries(tenant_id, limit=limit)

    # ------------------------------------------------------------------ actions
    def _targets(self, tenant_id: str | None, object_keys: Iterable[str] | None, filters: dict[str, Any]) -> list[Any]:
        keys = list(object_keys or [])
        if keys:
            if not tenant_id:
                raise BadRequest("tenant_id is required with object_keys", field="tenant_id")
            if len(keys) > MAX_BULK:
                raise BadRequest(f"at most {MAX_BULK} objects per request", field="object_keys")
            return [(tenant_id, k) for k in keys]
        if not filters.pop("all", False):
            raise BadRequest("give object_keys, or all=true with filters", field="object_keys")
        return [(i.tenant_id, i.object_key) for i in self.select(tenant_id=tenant_id, **filters)][:MAX_BULK]

    def retry(
        self,
        actor: str,
        *,
        tenant_id: str | None = None,
        object_keys: Iterable[str] | None = None,
        reason: str | None = None,
        **filters: Any,
    ) -> dict[str, Any]:
        """Send objects through the normal sync path again (attempts reset). Returns retried and per-key errors."""
        done: list[str] = []
        errors: dict[str, str] = {}
        for tenant, key in self._targets(tenant_id, object_keys, filters):
            try:
                item = self.store.get(tenant, key)
                self.store.retry(item, reason=f"retry requested by {actor}", allowed=rules.RETRYABLE_STATUSES)
            except (NotFound, Conflict) as exc:
                errors[key] = exc.message
                continue
            self.audit.record(
                tenant, actor, "retry", key, {"from_status": item.status, "reason": reason, **_err_brief(item)}
            )
            done.append(key)
        count("OpsRetried", len(done))
        return {"retried": done, "errors": errors}

    def exclude(self, actor: str, *, tenant_id: str, object_keys: Iterable[str], reason: str) -> dict[str, Any]:
        if not reason or not reason.strip():
            raise BadRequest("a reason is required to exclude", field="reason")
        return self._move("exclude", actor, tenant_id, object_keys, reason)

    def mark_manual(self, actor: str, *, tenant_id: str, object_keys: Iterable[str], note: str | None = None) -> Any:
        return self._move("manual", actor, tenant_id, object_keys, note or "to be entered in QuickBooks by hand")

    def manual_done(self, actor: str, *, tenant_id: str, object_keys: Iterable[str], note: str | None = None) -> Any:
        return self._move("manual_done", actor, tenant_id, object_keys, note or "entered in QuickBooks by hand")

    def _move(self, action: str, actor: str, tenant_id: str, object_keys: Iterable[str], reason: str) -> dict[str, Any]:
        done: list[str] = []
        errors: dict[str, str] = {}
        for _, key in self._targets(tenant_id, object_keys, {}):
            try:
                item = self.store.get(tenant_id, key)
                target = rules.check_transition(action, item.status)
                self.store.move(item, status=target, reason=f"{reason} ({actor})", from_status=item.status)
            except (NotFound, Conflict, BadRequest) as exc:
                errors[key] = exc.message
                continue
            self.audit.record(
                tenant_id, actor, action, key, {"from_status": item.status, "reason": reason, **_err_brief(item)}
            )
            done.append(key)
        count(f"Ops{action.title().replace('_', '')}", len(done))
        return {action: done, "errors": errors}


def _err_brief(item: ObjectItem) -> dict[str, Any]:
    err = item.last_error or {}
    return {"failure_kind": rules.failure_kind(err), "message": err.get("message")}
