"""The ops API's use cases as one route table (``ROUTES``), so the Lambda handler stays glue and the
OpenAPI document can be checked against exactly what is served.

Every route function takes an ``OpsRequest`` (path parameters, query, JSON body, the caller) and returns
``(status, body)``; errors are qbsync RequestErrors, mapped to HTTP by ``shared.http.respond``.

Who is calling: in AWS, API Gateway has already checked the SigV4 signature (``Auth: AWS_IAM``) and puts
the caller's ARN in ``requestContext.identity.userArn``. On the local stack (``OPS_LOCAL_KEY`` set) every
request must carry ``X-Qbsync-Ops-Key``, and ``X-Qbsync-Actor`` names the person for the audit log.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from shared.config import get_settings
from shared.domain.errors import BadRequest, NotFound, Unauthorized

KEY_HEADER = "x-qbsync-ops-key"
ACTOR_HEADER = "x-qbsync-actor"


@dataclass(frozen=True)
class OpsRequest:
    params: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)
    actor: str = "unknown"

    def q(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name) or default

    def b(self, name: str, default: Any = None) -> Any:
        value = self.body.get(name, default)
        return default if value is None else value

    def int_q(self, name: str, default: int) -> int:
        raw = self.query.get(name)
        try:
            return int(raw) if raw else default
        except ValueError as exc:
            raise BadRequest(f"{name} must be a whole number", field=name) from exc

    def keys(self) -> list[str]:
        keys = self.body.get("object_keys") or []
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise BadRequest(
                "object_keys must be a list of object keys such as appointment:appt-1", field="object_keys"
            )
        return keys


def parse_request(
    params: Mapping[str, str],
    headers: Mapping[str, str],
    query: Mapping[str, str] | None,
    body: str | None,
    request_context: Mapping[str, Any] | None,
) -> OpsRequest:
    """Authorize, then parse. Raises Unauthorized, or BadRequest for a body that is not a JSON object."""
    lower = {k.lower(): v for k, v in headers.items()}
    actor = authorize(lower, request_context)
    doc: Any = {}
    if body:
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise BadRequest("the body is not JSON") from exc
        if not isinstance(doc, dict):
            raise BadRequest("the body must be a JSON object")
    return OpsRequest({k: unquote(v) for k, v in params.items()}, dict(query or {}), doc, actor)


def authorize(headers: Mapping[str, str], request_context: Mapping[str, Any] | None) -> str:
    """The caller's identity for the audit log. Raises Unauthorized on the local stack without the key."""
    local_key = get_settings().ops_local_key
    identity = (request_context or {}).get("identity") or {}
    if local_key:
        given = headers.get(KEY_HEADER, "")
        if not given or not hmac.compare_digest(given.encode(), local_key.encode()):
            raise Unauthorized("missing or wrong X-Qbsync-Ops-Key")
        return str(headers.get(ACTOR_HEADER) or identity.get("userArn") or "local-operator")[:200]
    # In AWS, IAM already authenticated the request; the ARN is the only identity we trust.
    return str(identity.get("userArn") or identity.get("caller") or "unknown")


# ---------------------------------------------------------------- services (one per container)
@lru_cache(maxsize=1)
def failures() -> Any:
    from shared.services.failures import FailureService

    return FailureService()


@lru_cache(maxsize=1)
def dead_letters() -> Any:
    from shared.services.dead_letters import DeadLetterService

    return DeadLetterService()


@lru_cache(maxsize=1)
def mappings() -> Any:
    from shared.services.mappings import MappingService

    return MappingService()


@lru_cache(maxsize=1)
def matching() -> Any:
    from shared.services.matching import MatchingService

    return MatchingService()


def reset_services() -> None:
    for fn in (failures, dead_letters, mappings, matching):
        fn.cache_clear()


# ---------------------------------------------------------------- failures
def _filters(r: OpsRequest) -> dict[str, Any]:
    return {
        "tenant_id": r.q("tenant"),
        "kind": r.q("kind"),
        "object_kind": r.q("object_kind"),
        "older_than": r.q("older_than"),
    }


def list_failures(r: OpsRequest) -> tuple[int, Any]:
    return 200, failures().failures(limit=r.int_q("limit", 500), **_filters(r))


def show_failure(r: OpsRequest) -> tuple[int, Any]:
    return 200, failures().show(r.params["tenant"], r.params["object_key"])


def _body_filters(r: OpsRequest) -> dict[str, Any]:
    f = {k: r.b(k) for k in ("kind", "object_kind", "older_than", "status") if r.b(k)}
    return {**f, "all": bool(r.b("all", False))}


def retry_failures(r: OpsRequest) -> tuple[int, Any]:
    keys = r.keys()
    extra = {} if keys else _body_filters(r)
    return 200, failures().retry(r.actor, tenant_id=r.b("tenant_id"), object_keys=keys, reason=r.b("reason"), **extra)


def _tenant(r: OpsRequest) -> str:
    tenant = r.b("tenant_id")
    if not tenant:
        raise BadRequest("tenant_id is required", field="tenant_id")
    return str(tenant)


def exclude_failures(r: OpsRequest) -> tuple[int, Any]:
    return 200, failures().exclude(r.actor, tenant_id=_tenant(r), object_keys=r.keys(), reason=r.b("reason", ""))


def manual_failures(r: OpsRequest) -> tuple[int, Any]:
    return 200, failures().mark_manual(r.actor, tenant_id=_tenant(r), object_keys=r.keys(), note=r.b("note"))


def manual_done(r: OpsRequest) -> tuple[int, Any]:
    return 200, failures().manual_done(r.actor, tenant_id=_tenant(r), object_keys=r.keys(), note=r.b("note"))


def manual_todo(r: OpsRequest) -> tuple[int, Any]:
    return 200, failures().todo(r.q("tenant"))


def audit_log(r: OpsRequest) -> tuple[int, Any]:
    return 200, {"items": failures().audit_log(r.q("tenant"), limit=r.int_q("limit", 100))}


# ---------------------------------------------------------------- dead letters
def list_dlq(r: OpsRequest) -> tuple[int, Any]:
    return 200, dead_letters().letters(tenant_id=r.q("tenant"), limit=r.int_q("limit", 500))


def show_dlq(r: OpsRequest) -> tuple[int, Any]:
    return 200, dead_letters().show(r.params["message_id"])


def redrive_dlq(r: OpsRequest) -> tuple[int, Any]:
    ids = r.b("message_ids")
    if not ids and not r.b("all", False):
        raise BadRequest("give message_ids, or all=true", field="message_ids")
    return 200, dead_letters().redrive(r.actor, ids or None, delete=bool(r.b("delete", True)))


def delete_dlq(r: OpsRequest) -> tuple[int, Any]:
    return 200, dead_letters().delete(r.actor, [r.params["message_id"]])


# ---------------------------------------------------------------- status and connections
def object_status(r: OpsRequest) -> tuple[int, Any]:
    """Sync status by object key (``object_key=``) or by booking event ids (``event_ids=a,b``)."""
    from shared.adapters.dynamo import EventItem, bind_table

    bind_table()
    tenant = r.params["tenant"]
    keys: list[str] = []
    if r.q("object_key"):
        keys.append(str(r.q("object_key")))
    events: dict[str, str | None] = {}
    for event_id in [e for e in (r.q("event_ids") or "").split(",") if e]:
        try:
            ev = EventItem.get(f"EVT#{tenant}#{event_id}", "EVT")
        except EventItem.DoesNotExist:
            events[event_id] = None
            continue
        events[event_id] = ev.object_key
        keys.append(ev.object_key)
    if not keys:
        raise BadRequest("give object_key or event_ids", field="object_key")
    objects: list[dict[str, Any]] = []
    for key in dict.fromkeys(keys):
        try:
            detail = failures().show(tenant, key)
        except NotFound:
            objects.append({"object_key": key, "status": "unknown"})
            continue
        qbo = {
            slot: {k: v.get(k) for k in ("type", "id", "doc_number", "state", "total", "balance")}
            for slot, v in detail["qbo"].items()
            if isinstance(v, dict)
        }
        objects.append({**{k: detail[k] for k in _STATUS_FIELDS}, "qbo": qbo, "timeline": detail["timeline"]})
    return 200, {"tenant_id": tenant, "events": events, "objects": objects}


_STATUS_FIELDS = (
    "object_key",
    "object_kind",
    "status",
    "reason",
    "lifecycle",
    "desired_version",
    "synced_version",
    "dirty",
    "waiting_on",
    "next_attempt_at",
    "attempts",
    "message",
    "suggested_fix",
    "updated_at",
)


def connections(r: OpsRequest) -> tuple[int, Any]:
    from shared.adapters.attention import AttentionStore
    from shared.adapters.connections import ConnectionRepository
    from shared.adapters.objects import ObjectRepository

    repo = ConnectionRepository()
    held: dict[str, int] = {}
    for item in AttentionStore().by_status("held"):
        held[item.tenant_id] = held.get(item.tenant_id, 0) + 1
    queues = ObjectRepository.queues()
    now = datetime.now(UTC)
    rows = []
    for h in repo.health(now):
        tenants = repo.tenants_of(h["realm_id"])
        rows.append(
            {
                **h,
                "tenants": tenants,
                "held_objects": sum(held.get(t, 0) for t in tenants),
                **_queue_health(h, queues.get(h["realm_id"]), now),
            }
        )
    return 200, {"items": rows}


def _queue_health(health: dict[str, Any], queue: Any, now: datetime) -> dict[str, Any]:
    """The realm's queue (objects held back while other realms had work): how many wait, when it last moved (handed
    objects back), and a warning once it has not for twice ``SYNC_PARK_STALL_S`` (the sweep should have restarted
    it)."""
    from shared.adapters.objects import ObjectRepository

    if queue is None:
        return {"queued_objects": 0, "queue_moved_at": None}
    queued = ObjectRepository.queued(queue.sk)
    moved = datetime.fromtimestamp(int(queue.moved_at), UTC)
    idle_s = (now - moved).total_seconds()
    warnings = list(health.get("warnings", []))
    if queued and idle_s > 2 * get_settings().sync_park_stall_s:
        warnings.append(
            f"{queued} objects have waited in this company's queue without moving for {int(idle_s)} s: "
            "check that the retry sweep runs (its schedule, its errors)"
        )
    return {"queued_objects": queued, "queue_moved_at": moved.isoformat(timespec="seconds"), "warnings": warnings}


# ---------------------------------------------------------------- mappings
def show_mappings(r: OpsRequest) -> tuple[int, Any]:
    return 200, mappings().show(r.params["tenant"])


def set_mappings(r: OpsRequest) -> tuple[int, Any]:
    changes = r.b("changes")
    if not isinstance(changes, dict) or not changes:
        raise BadRequest(
            'changes must be an object such as {"services.97110": "Therapeutic Exercise"}', field="changes"
        )
    return 200, mappings().set(
        r.actor,
        r.params["tenant"],
        changes,
        validate=bool(r.b("validate", True)),
        repost=bool(r.b("repost", False)),
        retry=bool(r.b("retry", True)),
    )


def validate_mappings(r: OpsRequest) -> tuple[int, Any]:
    return 200, mappings().validate(r.params["tenant"], refresh=r.q("refresh", "true") != "false")


def unmapped_codes(r: OpsRequest) -> tuple[int, Any]:
    return 200, mappings().unmapped(r.params["tenant"])


def refresh_lists(r: OpsRequest) -> tuple[int, Any]:
    return 200, mappings().refresh(r.params["tenant"])


# ---------------------------------------------------------------- customer matching
def suggest_matches(r: OpsRequest) -> tuple[int, Any]:
    min_score = float(r.q("min_score") or 0.6)
    return 200, matching().suggestions(r.params["tenant"], min_score=min_score, limit=r.int_q("limit", 500))


def accept_match(r: OpsRequest) -> tuple[int, Any]:
    return 200, matching().accept(r.actor, r.params["tenant"], _patient(r), r.b("customer_id"))


def link_customer(r: OpsRequest) -> tuple[int, Any]:
    customer = r.b("customer_id")
    if not customer:
        raise BadRequest("customer_id is required", field="customer_id")
    return 200, matching().link(r.actor, r.params["tenant"], _patient(r), str(customer))


def create_customer(r: OpsRequest) -> tuple[int, Any]:
    return 200, matching().create(r.actor, r.params["tenant"], _patient(r))


def auto_accept(r: OpsRequest) -> tuple[int, Any]:
    threshold = r.b("threshold")
    return 200, matching().auto_accept(
        r.actor,
        r.params["tenant"],
        threshold=float(threshold) if threshold is not None else None,
        dry_run=bool(r.b("dry_run", False)),
    )


def reports(r: OpsRequest) -> tuple[int, Any]:
    from shared.services.reports import report_for_api  # matplotlib-free; loaded only for report calls

    query = {"tenant": r.params["tenant"], "from": r.q("from"), "to": r.q("to"), "verify": r.q("verify")}
    return 200, report_for_api(r.params["kind"], query)


def _patient(r: OpsRequest) -> str:
    patient = r.b("patient_id")
    if not patient:
        raise BadRequest("patient_id is required", field="patient_id")
    return str(patient)


Route = tuple[str, str, Callable[[OpsRequest], tuple[int, Any]], str]

# (method, path, function, summary) — docs/ops-openapi.json documents exactly these.
ROUTES: list[Route] = [
    ("GET", "/ops/failures", list_failures, "List failed objects with counts by kind"),
    ("GET", "/ops/failures/<tenant>/<object_key>", show_failure, "One failure: timeline, QBO fault, payload, fix"),
    ("POST", "/ops/failures/retry", retry_failures, "Send objects through the normal sync path again"),
    ("POST", "/ops/failures/exclude", exclude_failures, "Exclude objects from sync, with a reason"),
    ("POST", "/ops/failures/manual", manual_failures, "Mark objects for manual entry in QuickBooks"),
    ("POST", "/ops/failures/manual-done", manual_done, "Mark manual entries as done"),
    ("GET", "/ops/manual", manual_todo, "The manual-entry to-do list"),
    ("GET", "/ops/audit", audit_log, "Who did what (per tenant)"),
    ("GET", "/ops/dlq", list_dlq, "Dead letters (they stay in the queue)"),
    ("GET", "/ops/dlq/<message_id>", show_dlq, "One dead letter"),
    ("POST", "/ops/dlq/redrive", redrive_dlq, "Redrive dead letters through the normal path"),
    ("DELETE", "/ops/dlq/<message_id>", delete_dlq, "Delete a dead letter"),
    ("GET", "/ops/status/<tenant>", object_status, "Sync status of source objects (by object key or event ids)"),
    ("GET", "/ops/connections", connections, "Connection health per QuickBooks company"),
    ("GET", "/ops/mappings/<tenant>", show_mappings, "A tenant's mappings"),
    ("PUT", "/ops/mappings/<tenant>", set_mappings, "Set mappings (validated); retry what failed for lack of them"),
    ("GET", "/ops/mappings/<tenant>/validate", validate_mappings, "Check mappings against QuickBooks lists"),
    ("GET", "/ops/mappings/<tenant>/unmapped", unmapped_codes, "Codes seen in events with no mapping"),
    ("POST", "/ops/mappings/<tenant>/refresh", refresh_lists, "Reload the QuickBooks lists cache"),
    ("GET", "/ops/customers/<tenant>/suggestions", suggest_matches, "Patient → QuickBooks customer suggestions"),
    ("GET", "/ops/reports/<tenant>/<kind>", reports, "Revenue / visits / deposits / drift for a tenant and period"),
    ("POST", "/ops/customers/<tenant>/accept", accept_match, "Accept a suggested match"),
    ("POST", "/ops/customers/<tenant>/link", link_customer, "Link a patient to a given QuickBooks customer"),
    ("POST", "/ops/customers/<tenant>/create", create_customer, "Create a new QuickBooks customer for a patient"),
    ("POST", "/ops/customers/<tenant>/auto-accept", auto_accept, "Accept every unambiguous match above threshold"),
]


_API_DESCRIPTION = (
    "Failures, dead letters, sync status, connection health, mappings and customer matching. "
    "In AWS every request is SigV4-signed (API Gateway AWS_IAM); on the local stack it carries X-Qbsync-Ops-Key."
)


def openapi() -> dict[str, Any]:
    """OpenAPI 3.1 of the ops API, built from ``ROUTES`` (``python -m shared.services.ops`` writes
    docs/ops-openapi.json; a test checks the file matches what is served)."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, fn, summary in ROUTES:
        oa_path = path.replace("<", "{").replace(">", "}")
        params = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in (seg[1:-1] for seg in path.split("/") if seg.startswith("<"))
        ]
        op: dict[str, Any] = {
            "operationId": fn.__name__,
            "summary": summary,
            "description": (fn.__doc__ or summary).strip(),
            "security": [{"sigv4": []}, {"localKey": []}],
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
                "400": {"$ref": "#/components/responses/Error"},
                "401": {"$ref": "#/components/responses/Error"},
                "404": {"$ref": "#/components/responses/Error"},
                "409": {"$ref": "#/components/responses/Error"},
            },
        }
        if params:
            op["parameters"] = params
        if method in ("POST", "PUT"):
            op["requestBody"] = {"content": {"application/json": {"schema": {"type": "object"}}}}
        paths.setdefault(oa_path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "qbsync ops API", "version": "1.0.0", "description": _API_DESCRIPTION},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "sigv4": {"type": "apiKey", "in": "header", "name": "Authorization", "description": "AWS SigV4"},
                "localKey": {"type": "apiKey", "in": "header", "name": "X-Qbsync-Ops-Key"},
            },
            "responses": {
                "Error": {
                    "description": "error",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["error", "message"],
                                "properties": {
                                    "error": {"type": "string"},
                                    "message": {"type": "string"},
                                    "field": {"type": "string"},
                                },
                            }
                        }
                    },
                }
            },
        },
    }


if __name__ == "__main__":
    from pathlib import Path

    target = Path(__file__).resolve().parents[2] / "docs" / "ops-openapi.json"
    target.write_text(json.dumps(openapi(), indent=2) + "\n")
    print(f"wrote {target}")
