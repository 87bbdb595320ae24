"""The ops audit log: who did what to which object, per tenant (AuditItem pk ``AUDIT#{tenant}``,
sk ``{iso time}#{id}``; newest last). Entries are only ever added (conditional put: never overwritten)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, cast

from shared.adapters.dynamo import AuditItem, bind_table
from shared.adapters.objects import now_iso

# DLQ actions on messages that name no tenant (stream batch records) are logged under this pseudo-tenant.
OPS_TENANT = "_ops"


class AuditLog:
    def __init__(self) -> None:
        bind_table()

    def record(
        self, tenant_id: str | None, actor: str, action: str, target: str, detail: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        tenant = tenant_id or OPS_TENANT
        at = now_iso()
        item = AuditItem(
            f"AUDIT#{tenant}",
            f"{at}#{uuid.uuid4().hex[:8]}",
            rtype="audit",
            tenant_id=tenant,
            actor=actor,
            action=action,
            target=target,
            detail=detail or {},
            at=at,
        )
        item.save(condition=AuditItem.pk.does_not_exist())
        return entry(item)

    def entries(self, tenant_id: str | None, *, limit: int = 100, action: str | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` entries, newest first."""
        rows = cast(
            Iterator[AuditItem],
            AuditItem.query(f"AUDIT#{tenant_id or OPS_TENANT}", scan_index_forward=False),
        )
        out: list[dict[str, Any]] = []
        for item in rows:
            if action and item.action != action:
                continue
            out.append(entry(item))
            if len(out) >= limit:
                break
        return out


def entry(item: AuditItem) -> dict[str, Any]:
    return {
        "at": item.at,
        "tenant_id": item.tenant_id,
        "actor": item.actor,
        "action": item.action,
        "target": item.target,
        "detail": dict(item.detail or {}),
    }
