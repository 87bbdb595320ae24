"""Helpers for the ops tests: seed ledger rows the way the sync engine leaves them, call the ops handler."""

from __future__ import annotations

import json
from typing import Any

from shared.adapters.dynamo import EventItem, ObjectItem
from shared.adapters.objects import now_iso
from tests import builders as b

OPS_KEY = "test-ops-key"


def failed_object(
    tenant_id: str,
    object_key: str,
    *,
    error: dict[str, Any] | None = None,
    status: str = "failed",
    desired: dict[str, Any] | None = None,
    attempts: int = 1,
    updated_at: str | None = None,
) -> ObjectItem:
    ts = updated_at or now_iso()
    kind = object_key.split(":", 1)[0]
    err = error or {
        "kind": "permanent",
        "error": "MissingMapping",
        "message": "service code 97999 has no QuickBooks item mapping",
        "suggested_fix": "qbsync mappings set services 97999=<QuickBooks item name>, then retry",
        "mapping": "services.97999",
        "attempts": attempts,
    }
    item = ObjectItem(
        f"OBJ#{tenant_id}#{object_key}",
        "OBJ",
        rtype="object",
        tenant_id=tenant_id,
        object_key=object_key,
        kind=kind,
        desired=desired
        or {"appointment_id": object_key.split(":", 1)[1], "patient_id": "pat-1", "lines": [b.line("97999")]},
        desired_version=1,
        status=status,
        status_reason=err["message"],
        last_error=err,
        attempts=attempts,
        dirty=False,
        updated_at=ts,
        gsi1pk=f"STATUS#{status}" if status in ("failed", "retrying", "manual", "held", "waiting") else None,
        gsi1sk=f"{tenant_id}#{ts}",
    )
    item.save()
    EventItem(
        f"EVT#{tenant_id}#evt-{object_key}",
        "EVT",
        rtype="event",
        tenant_id=tenant_id,
        event_id=f"evt-{object_key}",
        type="appointment.completed",
        object_key=object_key,
        version=1,
        occurred_at=ts,
        received_at=ts,
        body_sha256="x",
        data=item.desired,
        outcome="applied",
        gsi1pk=f"OBJ#{tenant_id}#{object_key}",
        gsi1sk=f"{1:020d}#evt-{object_key}",
    ).save()
    return item


def call(
    handler: Any,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = OPS_KEY,
    actor: str = "alice",
    query: dict[str, str] | None = None,
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", "X-Qbsync-Actor": actor}
    if key:
        headers["X-Qbsync-Ops-Key"] = key
    event = b.api_gateway_event(method, path, json.dumps(body) if body is not None else None, headers)
    event["queryStringParameters"] = query
    event["resource"] = "/ops/{proxy+}"
    resp = handler.lambda_handler(event, b.lambda_context())
    return resp["statusCode"], json.loads(resp["body"]) if resp.get("body") else None
