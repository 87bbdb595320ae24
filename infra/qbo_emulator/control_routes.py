"""The control API under /_emulator/ (no auth): state setup, fault injection and inspection for tests."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from . import books, faults
from .store import BY_LOWER
from .util import QboError, dumps

if TYPE_CHECKING:
    from .server import Emulator

REALM_RE = re.compile(r"^/_emulator/realms/([^/]+)(?:/(.*))?$")


def _json(body: Any, status: int = 200) -> Response:
    return Response(dumps(body, drop_none=False), status=status, content_type="application/json")


def _error(message: str, status: int = 400) -> Response:
    return _json({"error": message}, status)


# Request counters kept by the emulator and reported by /_emulator/stats.
COUNTERS = ("requests", "reads", "writes", "batch", "queries", "cdc", "throttled", "faults", "auth_failures")


def new_counters() -> dict[str, Any]:
    return {**dict.fromkeys(COUNTERS, 0), "by_entity": {}}


def compute_stats(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts by kind. Rejected requests (401, 429) count only as auth_failures / throttled."""
    out: dict[str, Any] = {**new_counters(), "replayed": 0, "dropped": 0}
    names = {"read": "reads", "write": "writes", "query": "queries", "batch": "batch", "cdc": "cdc"}
    for e in entries:
        if e["kind"] not in names:
            continue
        out["requests"] += 1
        if e["status"] == 401:
            out["auth_failures"] += 1
            continue
        if e["status"] == 429:
            out["throttled"] += 1
            continue
        out[names[e["kind"]]] += 1
        if (e["status"] or 0) >= 500 or e.get("dropped"):
            out["faults"] += 1
        out["replayed"] += 1 if e.get("replayed") else 0
        out["dropped"] += 1 if e.get("dropped") else 0
        if e.get("entity"):
            out["by_entity"][e["entity"]] = out["by_entity"].get(e["entity"], 0) + 1
    return out


def handle_control(emu: Emulator, req: Request) -> Response:
    try:
        # Plain floats here: control values are settings/seconds, not money (ui bodies go through money()).
        body = json.loads(req.get_data()) if req.get_data() else {}
    except ValueError:
        return _error("body is not JSON")
    path = req.path.rstrip("/")
    m = req.method
    try:
        if path == "/_emulator/reset" and m == "POST":
            emu.reset()
            return _json({"ok": True})
        if path == "/_emulator/health":
            return _json({"ok": True, "url": emu.base_url})
        if path == "/_emulator/apps" and m == "POST":
            app = emu.oauth.register_app(body["client_id"], body["client_secret"], body.get("redirect_uris", []))
            return _json({"client_id": app.client_id, "redirect_uris": app.redirect_uris})
        if path == "/_emulator/realms" and m == "POST":
            realm = emu.create_realm(
                body.get("realm_id"),
                body.get("company_name"),
                body.get("preferences"),
                body.get("sales_tax_rate"),
            )
            return _json(realm.info())
        if path == "/_emulator/realms" and m == "GET":
            return _json({"realms": [r.info() for r in emu.realms.values()]})
        if path == "/_emulator/settings":
            if m in ("PUT", "POST", "PATCH"):
                emu.settings.update(body)
            return _json(emu.settings.as_dict())
        if path == "/_emulator/limits":
            if m in ("PUT", "POST", "PATCH"):
                emu.limits.update(body)
            return _json(emu.limits.__dict__)
        if path == "/_emulator/clock":
            if m == "POST":
                emu.clock.advance(float(body.get("advance_s", 0)))
            return _json({"now": emu.clock.now()})
        if path == "/_emulator/webhooks":
            if m in ("PUT", "POST", "PATCH"):
                emu.webhooks.configure(body)
            snap = emu.webhooks.snapshot()
            return _json(snap if req.args.get("full") else snap["config"])
        if path == "/_emulator/webhooks/events":
            return _json(emu.webhooks.snapshot()["events"])
        if path == "/_emulator/webhooks/deliveries":
            return _json(emu.webhooks.snapshot()["deliveries"])
        if path == "/_emulator/webhooks/wait_idle" and m == "POST":
            return _json({"idle": emu.webhooks.wait_idle(float(body.get("timeout", 10)))})
        if path == "/_emulator/requests":
            return _json(_filtered(emu, req))
        if path == "/_emulator/stats":
            return _json(compute_stats(_filtered(emu, req)))
        match = REALM_RE.match(path)
        if match:
            return _realm_route(emu, req, match.group(1), match.group(2) or "", body)
    except (KeyError, ValueError, TypeError) as exc:
        return _error(f"bad control request: {type(exc).__name__}: {exc}")
    return _error(f"unknown control route {m} {path}", 404)


def _filtered(emu: Emulator, req: Request) -> list[dict[str, Any]]:
    realm = req.args.get("realm")
    since = int(req.args.get("since", 0))
    with emu.lock:
        entries = list(emu.requests)
    return [e for e in entries if e["seq"] > since and (not realm or e["realm"] == realm)]


def _realm_route(emu: Emulator, req: Request, realm_id: str, rest: str, body: Any) -> Response:
    m = req.method
    if rest == "tokens/revoke" and m == "POST":
        return _json({"revoked_grants": emu.oauth.revoke_realm(realm_id)})
    if rest == "tokens/expire" and m == "POST":
        return _json({"expired_tokens": emu.oauth.expire_realm(realm_id)})
    realm = emu.realms.get(realm_id)
    if realm is None:
        return _error(f"unknown realm {realm_id}", 404)
    if rest == "":
        return _json(realm.info())
    if rest == "tokens" and m == "POST":
        emu.create_realm(realm_id)
        return _json(emu.oauth.issue_direct(realm_id, body.get("client_id") or emu._defaults["client_id"]))
    if rest == "books":
        with realm.lock:
            return _json(realm.books(include_deleted=req.args.get("include_deleted") in ("1", "true")))
    if rest == "faults":
        now = emu.clock.now()
        with realm.lock:
            if m == "DELETE":
                faults.faults_from_json(
                    realm.faults,
                    {
                        "error_rate": 0,
                        "error_status": 500,
                        "latency_ms": 0,
                        "outage_seconds": 0,
                        "force_401": False,
                        "throttle_seconds": 0,
                        "commit_then_drop": {},
                    },
                    now,
                )
            elif m in ("PUT", "POST", "PATCH"):
                faults.faults_from_json(realm.faults, body, now)
            return _json(faults.faults_to_json(realm.faults, now))
    if rest == "preferences" and m in ("PUT", "POST", "PATCH"):
        with realm.lock:
            prefs = realm.preferences
            result, changes = books.update(realm, "Preferences", dict(body, Id="1", SyncToken=prefs["SyncToken"]))
        emu.webhooks.record(changes)
        return _json(result)
    if rest.startswith("ui/") and m == "POST":
        entity = BY_LOWER.get(rest[3:].lower())
        if entity is None:
            return _error(f"unknown entity {rest[3:]}", 404)
        try:
            with realm.lock:
                result, changes = _ui(realm, entity, body.get("operation", "create"), dict(body.get("body", {})))
        except QboError as err:
            return _json({"Fault": err.fault()}, err.status)
        emu.webhooks.record(changes)
        return _json({entity: result})
    return _error(f"unknown realm route {m} {rest}", 404)


def _ui(realm: Any, entity: str, operation: str, body: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """A QBO user in the web UI always edits the latest version, so the SyncToken is filled in.

    Raises:
        QboError: what the same change would raise through the API.
    """
    if operation != "create":
        ident = "1" if entity in ("Preferences", "CompanyInfo") else str(body.get("Id", ""))
        current = realm.get(entity, ident)
        if current is not None and "SyncToken" not in body:
            body["SyncToken"] = current["SyncToken"]
        body["Id"] = ident
    if operation == "create":
        return books.create(realm, entity, body, allow_dup=True)
    if operation == "update":
        body.setdefault("sparse", True)
        return books.update(realm, entity, body, allow_dup=True)
    if operation == "delete":
        return books.delete(realm, entity, body)
    if operation == "void":
        via = "void" if entity in ("Invoice", "CreditMemo", "RefundReceipt") else "update"
        return books.void(realm, entity, body, via=via, ui=True)
    raise QboError("4001", "Unsupported Operation", f"ui operation {operation}")


__all__ = ["compute_stats", "handle_control"]
