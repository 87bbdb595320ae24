"""``qbsync demo``: a physical-therapy week through qbsync's public HTTP endpoints, on the local system.

Steps: start the local system → create the demo clinic tenant → its QuickBooks company (emulated) →
connect it through the real OAuth routes → apply mappings → replay the week's events, signed, in batches,
with duplicated and out-of-order deliveries → wait until all work is done → report what the clinic owner
and ops want to see. ``run_scenario`` is also what the end-to-end tests call.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from infra.demo.company import mappings, setup_company
from infra.demo.scenario import Scenario
from infra.local.system import LocalSystem
from shared.adapters.dynamo import EventItem, ObjectItem, bind_table
from shared.domain import signing
from shared.domain.errors import Unauthorized
from shared.services.tenants import create_tenant, update_tenant

Progress = Callable[[str, int, int], None]
VISIBLE = {"synced", "skipped", "failed", "held", "excluded", "manual", "manual_done"}


@dataclass
class DemoResult:
    tenant_id: str
    realm_id: str
    accepted: int = 0
    sent: int = 0
    duplicates_sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    unaccounted: list[str] = field(default_factory=list)
    event_objects: dict[str, str] = field(default_factory=dict)  # stored event id -> its object key (account)
    books: dict[str, Any] = field(default_factory=dict)
    books_synced: dict[str, Any] = field(default_factory=dict)  # before the bookkeeper's edits in QuickBooks
    qbo_side_changes: dict[str, str] = field(default_factory=dict)
    callbacks: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.unaccounted and self.accepted > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "realm_id": self.realm_id,
            "events_sent": self.sent,
            "duplicates_sent": self.duplicates_sent,
            "events_accepted": self.accepted,
            "objects_by_status": self.statuses,
            "reasons": self.reasons,
            "unaccounted": self.unaccounted,
            "books": self.books,
            "books_as_synced": self.books_synced,
            "qbo_side_changes": self.qbo_side_changes,
            "platform_callbacks": self.callbacks,
            "seconds": round(self.seconds, 1),
            "ok": self.ok,
        }


class CallbackReceiver:
    """The booking platform's callback endpoint for the demo: records every signed callback it receives."""

    def __init__(self) -> None:
        from werkzeug.serving import make_server
        from werkzeug.wrappers import Request, Response

        self.received: list[dict[str, Any]] = []

        @Request.application  # type: ignore[misc]
        def app(request: Request) -> Response:
            self.received.append(
                {"body": request.get_data(), "signature": request.headers.get("X-Qbsync-Signature", "")}
            )
            return Response("", status=204)

        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}/qbsync/callbacks"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def verified_types(self, secret: str) -> Counter[str]:
        """Callback types whose signature verifies with the tenant's signing secret."""
        types: Counter[str] = Counter()
        for cb in self.received:
            try:
                signing.verify(cb["body"], cb["signature"], [secret], now=time.time(), tolerance_s=300)
            except Unauthorized:  # an unverifiable callback is not counted
                continue
            types[json.loads(cb["body"])["type"]] += 1
        return types

    def stop(self) -> None:
        self._server.shutdown()


def onboard(
    system: LocalSystem, tenant_id: str, company_name: str, *, callback_url: str | None = None
) -> tuple[str, str]:
    """Tenant + emulated company + OAuth connect through the gateway + mappings. Returns (realm, secret)."""
    control = system.control
    realm_id = str(control.create_realm(company_name=company_name)["realm_id"])
    setup_company(control, realm_id)
    settings = {"direction": "both"} if callback_url else None
    created = create_tenant(tenant_id, company_name, callback_url=callback_url, settings=settings)
    connect_through_oauth(system.api_url, tenant_id, realm_id)
    update_tenant(tenant_id, changes={f"mappings.{k}": v for k, v in mappings().items()})
    return realm_id, created.signing_secret


def connect_through_oauth(api_url: str, tenant_id: str, realm_id: str) -> None:
    """What the practice admin does in a browser: connect → Intuit consent (emulated) → callback."""
    s = requests.Session()
    r = s.get(f"{api_url}/oauth/connect", params={"tenant": tenant_id}, allow_redirects=False, timeout=10)
    if r.status_code != 302:
        raise RuntimeError(f"connect did not redirect: {r.status_code} {r.text[:200]}")
    authorize = r.headers["Location"] + f"&realm_id={realm_id}"  # the admin picks the company
    r = s.get(authorize, allow_redirects=False, timeout=10)
    callback = r.headers["Location"]
    if urlsplit(callback).path != "/oauth/callback":
        raise RuntimeError(f"authorize redirected to {callback}")
    r = s.get(callback, timeout=30)
    if r.status_code != 200:
        raise RuntimeError(f"OAuth callback failed: {r.status_code} {r.text[:300]}")


def deliveries(events: list[dict[str, Any]], rnd: random.Random, dup_rate: float, window: int) -> list[dict[str, Any]]:
    """The order a real platform delivers in: mostly in order, shuffled within small windows, some twice."""
    out: list[dict[str, Any]] = []
    for i in range(0, len(events), window):
        chunk = events[i : i + window]
        rnd.shuffle(chunk)
        out.extend(chunk)
    dups = [e for e in events if rnd.random() < dup_rate]
    for e in dups:
        out.insert(rnd.randrange(len(out) + 1), e)
    return out


def post_events(
    api_url: str,
    tenant_id: str,
    secret: str,
    events: list[dict[str, Any]],
    *,
    batch_size: int = 25,
    progress: Progress | None = None,
) -> set[str]:
    """POST the events signed, in batches; returns the ids the API accepted (202)."""
    accepted: set[str] = set()
    s = requests.Session()

    def send(batch: list[dict[str, Any]]) -> None:
        body = json.dumps({"events": batch}).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Qbsync-Tenant": tenant_id,
            "X-Qbsync-Signature": signing.sign(body, secret, int(time.time())),
        }
        r = s.post(f"{api_url}/v1/events", data=body, headers=headers, timeout=30)
        if r.status_code != 202:
            raise RuntimeError(f"events rejected: {r.status_code} {r.text[:300]}")
        accepted.update(e["id"] for e in batch)

    batch: list[dict[str, Any]] = []
    for n, ev in enumerate(events, 1):
        # A batch may not repeat an id: a duplicate delivery goes out in a later request, as a retry would.
        if len(batch) >= batch_size or any(e["id"] == ev["id"] for e in batch):
            send(batch)
            batch = []
            if progress:
                progress("posting events", n - 1, len(events))
        batch.append(ev)
    if batch:
        send(batch)
    if progress:
        progress("posting events", len(events), len(events))
    return accepted


def run_scenario(
    system: LocalSystem,
    scenario: Scenario,
    *,
    tenant_id: str = "demo-clinic",
    company_name: str = "Riverside Physical Therapy",
    seed: int = 42,
    dup_rate: float = 0.1,
    progress: Progress | None = None,
    qbo_side_changes: bool = True,
) -> DemoResult:
    receiver = CallbackReceiver()
    try:
        return _run(system, scenario, receiver, tenant_id, company_name, seed, dup_rate, progress, qbo_side_changes)
    finally:
        receiver.stop()


def _run(
    system: LocalSystem,
    scenario: Scenario,
    receiver: CallbackReceiver,
    tenant_id: str,
    company_name: str,
    seed: int,
    dup_rate: float,
    progress: Progress | None,
    qbo_side_changes: bool,
) -> DemoResult:
    started = time.monotonic()
    realm_id, secret = onboard(system, tenant_id, company_name, callback_url=receiver.url)
    result = DemoResult(tenant_id=tenant_id, realm_id=realm_id)
    order = deliveries(list(scenario.events), random.Random(seed), dup_rate, window=6)
    result.sent = len(order)
    result.duplicates_sent = len(order) - len(scenario.events)
    accepted = post_events(system.api_url, tenant_id, secret, order, progress=progress)
    result.accepted = len(accepted)
    if progress:
        progress("waiting for QuickBooks sync", 0, 1)
    system.wait_idle(timeout=600)
    result.books_synced = books_summary(system, realm_id, tenant_id)
    if qbo_side_changes:
        if progress:
            progress("a bookkeeper edits and deletes invoices in QuickBooks", 0, 1)
        result.qbo_side_changes = edit_and_delete_in_qbo(system, realm_id)
        system.wait_idle(timeout=600)
    account(result, accepted)
    result.callbacks = dict(receiver.verified_types(secret))
    result.books = books_summary(system, realm_id, tenant_id)
    result.seconds = time.monotonic() - started
    return result


def edit_and_delete_in_qbo(system: LocalSystem, realm_id: str) -> dict[str, str]:
    """A bookkeeper working in QuickBooks: changes the memo-free line amount of one invoice and deletes another
    (with no payment applied). Webhooks tell qbsync, which tells the platform through signed callbacks."""
    control = system.control
    invoices = sorted(
        (i for i in control.books(realm_id).get("Invoice", []) if not i.get("LinkedTxn")), key=lambda i: i["Id"]
    )
    if len(invoices) < 2:
        return {}
    edited, deleted = invoices[0], invoices[-1]
    lines = [ln for ln in edited["Line"] if ln.get("DetailType") == "SalesItemLineDetail"]
    first = lines[0]
    detail = first["SalesItemLineDetail"]
    new_price = Decimal(str(detail.get("UnitPrice", first["Amount"]))) + Decimal("5.00")
    qty = Decimal(str(detail.get("Qty", 1)))
    first = {
        **first,
        "Amount": float(new_price * qty),
        "SalesItemLineDetail": {**detail, "UnitPrice": float(new_price)},
    }
    body = {"Id": edited["Id"], "SyncToken": edited["SyncToken"], "sparse": True, "Line": [first, *lines[1:]]}
    control.ui(realm_id, "Invoice", "update", body)
    control.ui(realm_id, "Invoice", "delete", {"Id": deleted["Id"], "SyncToken": deleted["SyncToken"]})
    return {"edited": str(edited.get("DocNumber")), "deleted": str(deleted.get("DocNumber"))}


def account(result: DemoResult, accepted: set[str], tenant_objects: list[ObjectItem] | None = None) -> None:
    """Prove every accepted event ends somewhere visible: its object synced, skipped (rule named), failed
    (failure record + DLQ) or held; a stale event counts through the newer version that superseded it.
    ``tenant_objects``: the tenant's ledger objects if already read (else the ledger is scanned for them)."""
    bind_table()
    if tenant_objects is None:
        tenant_objects = [o for o in ObjectItem.scan() if o.rtype == "object" and o.tenant_id == result.tenant_id]
    objects = {o.object_key: o for o in tenant_objects}
    statuses: Counter[str] = Counter(o.status for o in objects.values())
    reasons: Counter[str] = Counter(
        f"{o.status}: {o.status_reason}" for o in objects.values() if o.status != "synced" and o.status_reason
    )
    for event_id in sorted(accepted):
        try:
            ev = EventItem.get(f"EVT#{result.tenant_id}#{event_id}", "EVT")
        except EventItem.DoesNotExist:
            result.unaccounted.append(f"{event_id}: not stored")
            continue
        result.event_objects[event_id] = ev.object_key
        obj = objects.get(ev.object_key)
        if ev.outcome not in ("applied", "stale"):
            result.unaccounted.append(f"{event_id}: never applied")
        elif obj is None or obj.status not in VISIBLE or obj.dirty:
            result.unaccounted.append(f"{event_id}: object {ev.object_key} is {obj.status if obj else 'missing'}")
    result.statuses = dict(statuses)
    result.reasons = dict(reasons.most_common(12))


def books_summary(system: LocalSystem, realm_id: str, tenant_id: str) -> dict[str, Any]:
    """The books as QBO holds them: revenue by provider (class), location (department), service (item),
    payer type and modality (from the ledger's link of each invoice to its visit); open balances."""
    books = system.control.books(realm_id)
    names = {
        kind: {row["Id"]: row.get("Name") or row.get("DisplayName") for row in books.get(kind, [])}
        for kind in ("Class", "Department", "Item", "Customer")
    }
    by: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    invoices = books.get("Invoice", [])
    for inv in invoices:
        total = Decimal(str(inv.get("TotalAmt", 0)))
        by["provider"][names["Class"].get((inv.get("ClassRef") or {}).get("value"), "(none)")] += total
        by["location"][names["Department"].get((inv.get("DepartmentRef") or {}).get("value"), "(none)")] += total
        for ln in inv.get("Line", []):
            if ln.get("DetailType") == "SalesItemLineDetail":
                item = names["Item"].get(ln["SalesItemLineDetail"]["ItemRef"]["value"], "?")
                by["service"][item] += Decimal(str(ln["Amount"]))
    bind_table()
    by_id = {inv["Id"]: Decimal(str(inv.get("TotalAmt", 0))) for inv in invoices}
    for o in ObjectItem.scan():
        if o.rtype != "object" or o.tenant_id != tenant_id or o.kind != "appointment":
            continue
        inv_id = (o.qbo or {}).get("invoice", {}).get("id")
        if inv_id in by_id:
            by["payer_type"][o.desired.get("payer_type", "?")] += by_id[inv_id]
            by["modality"][o.desired.get("modality", "?")] += by_id[inv_id]
    return {
        "invoices": len(invoices),
        "invoiced_total": str(sum(by_id.values(), Decimal(0))),
        "open_balance": str(sum((Decimal(str(i.get("Balance", 0))) for i in invoices), Decimal(0))),
        "payments": len(books.get("Payment", [])),
        "credit_memos": len(books.get("CreditMemo", [])),
        "customers": len(books.get("Customer", [])),
        "revenue": {k: {n: str(v.quantize(Decimal("0.01"))) for n, v in sorted(d.items())} for k, d in by.items()},
    }


def write_report(result: DemoResult, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "demo-report.json"
    path.write_text(json.dumps(result.to_json(), indent=2))
    return path
