"""QBO Accounting API v3 handlers (entities, query, batch, CDC) behind auth, limits, faults and requestid."""

from __future__ import annotations

import contextlib
import socket
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from . import books, faults
from .query import execute, parse
from .store import BY_LOWER, Realm
from .util import QboError, dumps, fmt_ts, loads, new_tid, parse_datetime

if TYPE_CHECKING:
    from .server import Emulator


class Dropped(Exception):
    """The write was applied but the response is to be lost (commit-then-drop)."""


def envelope(emu: Emulator, body: dict[str, Any]) -> dict[str, Any]:
    return dict(body, time=fmt_ts(emu.clock.now(), True))


def fault_response(emu: Emulator, err: QboError) -> tuple[int, dict[str, Any]]:
    return err.status, envelope(emu, {"Fault": err.fault()})


def classify(method: str, parts: list[str]) -> tuple[str, str | None]:
    """(kind, entity) of an API path below /v3/company/{realm}/."""
    head = parts[0].lower() if parts else ""
    if head == "query":
        return "query", None
    if head == "batch":
        return "batch", None
    if head == "cdc":
        return "cdc", None
    entity = BY_LOWER.get(head)
    return ("read" if method == "GET" else "write"), entity


def handle_api(emu: Emulator, req: Request, realm_id: str, parts: list[str]) -> Response:
    """Full pipeline for one API request. Raises: Dropped (commit-then-drop)."""
    kind, entity = classify(req.method, parts)
    entry = emu.log_request(req, realm_id, kind, entity)
    now = emu.clock.now()

    def finish(status: int, body: str, ctype: str = "application/json") -> Response:
        entry["status"] = status
        resp = Response(body, status=status, content_type=ctype)
        resp.headers["intuit_tid"] = entry["intuit_tid"]
        return resp

    # 1. authentication (gateway)
    auth = req.headers.get("Authorization", "")
    bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    token_realm, reason = emu.oauth.realm_of(bearer) if bearer else (None, "missing")
    realm = emu.realms.get(realm_id)
    if emu.settings.accept_any_bearer and bearer:
        token_realm, reason = realm_id, ""
        realm = realm or emu.create_realm(realm_id)
    if realm is not None and realm.faults.force_401:
        token_realm, reason = None, "rejected (forced)"
    if token_realm is None or token_realm != realm_id or realm is None:
        detail = reason if token_realm is None else "not valid for this company"
        entry["kind_detail"] = "auth"
        emu.count("auth_failures")
        return finish(401, faults.auth_fault_body(now, detail))
    # 2. limits
    if not emu.limiter.enter(realm_id, kind == "batch"):
        emu.count("throttled")
        body, ctype = faults.throttle_body(now, emu.settings.throttle_xml)
        return finish(429, body, ctype)
    try:
        # 3. injected faults
        f = realm.faults
        if f.latency_ms:
            time.sleep(f.latency_ms / 1000)
        if f.throttle_until > now:
            emu.count("throttled")
            body, ctype = faults.throttle_body(now, emu.settings.throttle_xml)
            return finish(429, body, ctype)
        if f.outage_until > now:
            emu.count("faults")
            return finish(503, faults.system_fault_body(now, 503))
        if faults.roll_error(f):
            emu.count("faults")
            return finish(f.error_status, faults.system_fault_body(now, f.error_status))
        # 4. requestid replay
        request_id = req.args.get("requestid")
        entry["requestid"] = request_id
        honor = emu.settings.requestid_mode == "honored" and request_id and req.method == "POST"
        if honor:
            with realm.lock:
                cached = realm.requestids.get(request_id or "")
                if cached and now - cached[0] <= emu.settings.requestid_retention_s:
                    entry["replayed"] = True
                    return finish(cached[1], cached[2])
        emu.count(kind, entity)
        # 5. the operation
        with realm.lock:
            status, body, changes = dispatch(emu, realm, req, kind, entity, parts=parts)
            text = dumps(body)
            if honor and status < 500:
                realm.requestids[request_id or ""] = (now, status, text)
            writes = kind == "write" or (kind == "batch" and _batch_writes(req))
            drop = writes and status == 200 and faults.should_drop(f, entity)
        emu.webhooks.record(changes)
        if drop:
            entry["dropped"] = True
            entry["status"] = status
            emu.count("faults")
            raise Dropped()
        return finish(status, text)
    finally:
        emu.limiter.leave(realm_id)


def drop_connection(environ: dict[str, Any]) -> None:
    """Shut the client socket so the caller sees a connection error instead of a response."""
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _body_json(req: Request) -> Any:
    """Raises: QboError 2010 for a malformed body."""
    raw = req.get_data()
    if not raw:
        return {}
    try:
        return loads(raw)
    except ValueError as exc:
        raise QboError(
            "2010",
            "Request has invalid or unsupported property",
            f"Unable to parse the request body as JSON: {exc}",
        ) from exc


def _batch_writes(req: Request) -> bool:
    """A batch that only queries commits nothing, so commit-then-drop does not apply to it."""
    try:
        items = (req.get_json(silent=True) or {}).get("BatchItemRequest", [])
    except (AttributeError, TypeError):
        return True
    return any("Query" not in item for item in items)


def dispatch(
    emu: Emulator, realm: Realm, req: Request, kind: str, entity: str | None, *, parts: list[str]
) -> tuple[int, dict[str, Any], list[books.Change]]:
    """Run one operation under the realm lock; QboErrors become Fault envelopes."""
    try:
        if kind == "query":
            text = req.args.get("query") if req.method == "GET" else req.get_data(as_text=True)
            if not text:
                text = req.args.get("query", "")
            return 200, envelope(emu, {"QueryResponse": run_query(emu, realm, text)}), []
        if kind == "cdc":
            return (
                200,
                envelope(emu, cdc(emu, realm, req.args.get("entities", ""), req.args.get("changedSince", ""))),
                [],
            )
        if kind == "batch":
            return batch(emu, realm, _body_json(req))
        if entity is None:
            return (
                400,
                envelope(
                    emu,
                    {
                        "Fault": QboError(
                            "4001", "Unsupported Operation", f"Operation {'/'.join(parts)} is not supported"
                        ).fault()
                    },
                ),
                [],
            )
        if req.method == "GET":
            ident = "1" if entity in ("Preferences", "CompanyInfo") else (parts[1] if len(parts) > 1 else "")
            if len(parts) > 2:
                return (
                    400,
                    envelope(
                        emu,
                        {"Fault": QboError("4001", "Unsupported Operation", "PDF and send are not emulated").fault()},
                    ),
                    [],
                )
            return 200, envelope(emu, {entity: books.read(realm, entity, ident)}), []
        body = _body_json(req)
        if not isinstance(body, dict):
            raise QboError("2010", "Request has invalid or unsupported property", "Body must be a JSON object")
        result, changes = write(realm, entity, body, req.args.get("operation"), req.args.get("include", ""))
        return 200, envelope(emu, {entity: result}), changes
    except QboError as err:
        status, body = fault_response(emu, err)
        return status, body, []


def write(
    realm: Realm, entity: str, body: dict[str, Any], operation: str | None, include: str
) -> tuple[dict[str, Any], list[books.Change]]:
    """Route a POST by operation/include. Raises: QboError."""
    includes = {p.strip().lower() for p in include.split(",") if p.strip()}
    allow_dup = "allowduplicatedocnum" in includes
    if operation == "delete":
        return books.delete(realm, entity, body)
    if operation == "void":
        return books.void(realm, entity, body, via="void")
    if operation == "update" and "void" in includes:
        return books.void(realm, entity, body, via="update")
    if operation not in (None, "", "create", "update"):
        raise QboError("4001", "Unsupported Operation", f"operation={operation} is not supported")
    if body.get("Id") not in (None, "") or entity in ("Preferences", "CompanyInfo"):
        return books.update(realm, entity, body, allow_dup=allow_dup)
    return books.create(realm, entity, body, allow_dup=allow_dup)


def run_query(emu: Emulator, realm: Realm, text: str) -> dict[str, Any]:
    """Raises: QboError 4000."""
    return execute(realm, parse(text, emu.settings.query_max_results))


def cdc(emu: Emulator, realm: Realm, entities: str, changed_since: str) -> dict[str, Any]:
    """Change data capture. Raises: QboError 2020 missing params, 4000/6000 bad window."""
    if not entities:
        raise books.required("entities")
    if not changed_since:
        raise books.required("changedSince")
    since = parse_datetime(changed_since)
    if since is None:
        raise QboError("4000", "Error parsing query", f"changedSince is not an ISO-8601 date: {changed_since}")
    now = emu.clock.now()
    if now - since.timestamp() > emu.settings.cdc_lookback_days * 86400:
        raise QboError(
            "6000",
            "A business validation error has occurred while processing your request",
            f"changedSince cannot be more than {emu.settings.cdc_lookback_days} days in the past",
        )
    budget = emu.settings.cdc_max_objects
    groups: list[dict[str, Any]] = []
    from .entities import present

    for name in [e.strip() for e in entities.split(",") if e.strip()]:
        entity = BY_LOWER.get(name.lower())
        if entity is None or entity in ("TaxCode", "TaxRate"):
            raise QboError("4000", "Error parsing query", f"Invalid entity for CDC: {name}")
        live = [(realm.changed_at.get((entity, i), 0.0), o) for i, o in realm.objects[entity].items()]
        live = sorted([x for x in live if x[0] >= since.timestamp()], key=lambda x: x[0])
        gone = [(realm.changed_at.get(k, 0.0), t) for k, t in realm.deleted.items() if k[0] == entity]
        gone = sorted([x for x in gone if x[0] >= since.timestamp()], key=lambda x: x[0])
        rows = [present(entity, o) for _, o in live] + [dict(t) for _, t in gone]
        rows = rows[: max(0, budget)]
        budget -= len(rows)
        if rows:
            groups.append({entity: rows, "startPosition": 1, "maxResults": len(rows)})
        else:
            groups.append({"startPosition": 1, "maxResults": 0})
    return {"CDCResponse": [{"QueryResponse": groups}]}


def batch(emu: Emulator, realm: Realm, body: Any) -> tuple[int, dict[str, Any], list[books.Change]]:
    """The /batch endpoint. Raises: QboError for an invalid envelope or too many items."""
    items = body.get("BatchItemRequest") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise QboError(
            "2020",
            "Required param missing, need to supply the required value for the API",
            "BatchItemRequest is missing or empty",
        )
    limit = emu.limits.batch_max_items
    if len(items) > limit:
        raise QboError(
            "6000",
            "A business validation error has occurred while processing your request",
            f"Batch request contains {len(items)} items; the maximum is {limit}",
        )
    out: list[dict[str, Any]] = []
    changes: list[books.Change] = []
    created: list[tuple[str, str]] = []
    for item in items:
        bid = str(item.get("bId", ""))
        hidden: dict[tuple[str, str], dict[str, Any]] = {}
        if not emu.settings.batch_sees_own_creates:
            # QBO runs items in order but an item cannot see objects created earlier in the same batch.
            for key in created:
                obj = realm.objects[key[0]].pop(key[1], None)
                if obj is not None:
                    hidden[key] = obj
        try:
            if "Query" in item:
                out.append({"bId": bid, "QueryResponse": run_query(emu, realm, str(item["Query"]))})
                continue
            entity = next((k for k in item if k in BY_LOWER.values()), None)
            if entity is None:
                raise QboError(
                    "2020",
                    "Required param missing, need to supply the required value for the API",
                    "Batch item has no entity object",
                )
            op = str(item.get("operation", "create")).lower()
            options = str(item.get("optionsData", "")).lower()
            obj = item[entity]
            if op == "delete":
                result, ch = books.delete(realm, entity, obj)
            elif op == "update" and "void" in options:
                via = "void" if entity == "Invoice" else "update"
                result, ch = books.void(realm, entity, obj, via=via)
            elif op == "update":
                result, ch = books.update(realm, entity, obj, allow_dup="allowduplicatedocnum" in options)
            elif op == "create":
                result, ch = books.create(realm, entity, obj, allow_dup="allowduplicatedocnum" in options)
                created.append((entity, result["Id"]))
            else:
                raise QboError("4001", "Unsupported Operation", f"Batch operation {op} is not supported")
            changes.extend(ch)
            out.append({"bId": bid, entity: result})
        except QboError as err:
            out.append({"bId": bid, "Fault": err.fault()})
        finally:
            for key, obj in hidden.items():
                realm.objects[key[0]][key[1]] = obj
    if created:
        books.recompute(realm)
    return 200, envelope(emu, {"BatchItemResponse": out}), changes


def money_sum(values: list[Decimal]) -> Decimal:
    return sum(values, Decimal(0))


__all__ = ["Dropped", "drop_connection", "handle_api", "new_tid"]
