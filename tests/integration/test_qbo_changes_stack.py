"""QBO → platform through the local stack with the QBO emulator: webhooks → notices → change worker → signed
callbacks to a platform receiver; qbsync's own writes cause no callbacks; the CDC sweep finds the same changes
when webhooks are off."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from infra.qbo_emulator import EmulatorServer
from infra.qbo_emulator.control import EmulatorControl
from tests import builders as b

TOKEN = "stack-verifier-token"


class Receiver:
    """The platform's callback endpoint: records every request (127.0.0.1, free port)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._lock = threading.Lock()

        @Request.application  # type: ignore[misc]
        def app(request: Request) -> Response:
            with self._lock:
                self.requests.append((dict(request.headers), request.get_data()))
            return Response("{}", 200, content_type="application/json")

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/callbacks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(body) for _, body in self.requests]

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def world(local_stack: Any) -> Iterator[tuple[Any, EmulatorControl, Receiver]]:
    from shared.adapters import callbacks, dynamo, secrets
    from shared.config import reset_settings_cache

    server = EmulatorServer(port=0).start()
    receiver = Receiver()
    local_stack.add_server("qbo_emulator", server.url, env={"QBO_BASE_URL": server.url, "QBO_ENVIRONMENT": "local"})
    reset_settings_cache()
    dynamo.reset_binding()
    secrets.reset_client()
    callbacks.reset_clients()
    _clear_handler_caches()
    local_stack.client("secretsmanager").put_secret_value(
        SecretId=local_stack.ref("QboWebhookVerifierSecret"), SecretString=json.dumps({"verifier_token": TOKEN})
    )
    try:
        yield local_stack, EmulatorControl(server.url), receiver
    finally:
        receiver.stop()
        server.stop()
        _clear_handler_caches()


def _clear_handler_caches() -> None:
    from functions.callback_sender import handler as sender
    from functions.cdc_sweep import handler as cdc
    from functions.qbo_change_worker import handler as worker
    from functions.qbo_webhook import handler as webhook

    webhook.service.cache_clear()
    worker.service.cache_clear()
    sender.sender.cache_clear()
    cdc.sweep.cache_clear()


@dataclass
class Books:
    """One realm + tenant with a customer and four qbsync-owned invoices, recorded in the ledger."""

    realm: str
    tenant_id: str
    secret: str
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)  # object_key -> QBO invoice


def _record(tenant_id: str, realm: str, object_key: str, slot: str, row: dict[str, Any]) -> None:
    """What the sync engine records after a write (ObjectItem qbo[slot]) plus the reverse link."""
    from shared.adapters.dynamo import ObjectItem
    from shared.adapters.qbo_links import link

    entity = "Customer" if slot == "customer" else "Invoice"
    ObjectItem(
        f"OBJ#{tenant_id}#{object_key}",
        "OBJ",
        rtype="object",
        tenant_id=tenant_id,
        object_key=object_key,
        kind=object_key.split(":", 1)[0],
        realm_id=realm,
        desired_version=1,
        synced_version=1,
        dirty=False,
        status="synced",
        qbo={
            slot: {
                "type": entity,
                "id": row["Id"],
                "sync_token": row["SyncToken"],
                "doc_number": row.get("DocNumber"),
                "state": "active",
                "total": row.get("TotalAmt"),
                "balance": row.get("Balance"),
                "last_updated": row["MetaData"]["LastUpdatedTime"],
            }
        },
        updated_at=datetime.now(UTC).isoformat(),
    ).save()
    link(realm, entity, row["Id"], tenant_id, object_key, slot)


def make_books(stack: Any, control: EmulatorControl, receiver: Receiver, *, webhooks: bool) -> Books:
    from shared.adapters import secrets
    from shared.adapters.dynamo import ConnectionItem, TenantItem
    from shared.adapters.qbo.client import QboClient
    from shared.adapters.qbo.tokens import token_secret_id
    from shared.services.tenants import create_tenant
    from tests.sync_harness import EmulatorTokens

    realm = control.create_realm(company_name="Callback PT")["realm_id"]
    income = next(a for a in control.books(realm)["Account"] if a.get("AccountType") == "Income")
    item = control.ui(
        realm, "Item", "create", {"Name": "Therapy", "Type": "Service", "IncomeAccountRef": {"value": income["Id"]}}
    )["Item"]
    tokens = control.issue_tokens(realm)
    now = time.time()
    secrets.put_json(
        token_secret_id(realm),
        {
            "access_token": tokens["access_token"],
            "refresh_token": tokens["refresh_token"],
            "access_expires_at": now + 3000,
            "refresh_expires_at": now + 86400 * 90,
            "refresh_hard_expires_at": None,
            "token_version": 0,
        },
    )
    ConnectionItem(
        f"REALM#{realm}",
        "CONN",
        rtype="connection",
        realm_id=realm,
        status="connected",
        secret_id=token_secret_id(realm),
    ).save()
    created = create_tenant(
        b.new_id("clinic"), "Callback Clinic", callback_url=receiver.url, settings={"direction": "both"}
    )
    t = TenantItem.get(f"TENANT#{created.tenant.tenant_id}", "TENANT")
    t.update(
        actions=[
            TenantItem.realm_id.set(realm),
            TenantItem.gsi1pk.set(f"REALM#{realm}"),
            TenantItem.gsi1sk.set(f"TENANT#{t.tenant_id}"),
        ]
    )
    books = Books(realm, created.tenant.tenant_id, created.signing_secret)
    if webhooks:
        control.set_webhooks(
            url=stack.urls["api"] + "/webhooks/qbo", verifier_token=TOKEN, format="cloudevents", enabled=True
        )
    else:
        control.set_webhooks(enabled=False)
    client = QboClient(realm, tokens=EmulatorTokens(control))
    # qbsync's own writes: the ledger rows are written before the stream delivers their notices (echoes).
    with stack.paused():
        customer = client.create("Customer", {"DisplayName": "Patient 8F3K2"}, request_id=b.new_id("rq"))
        _record(books.tenant_id, realm, "patient:p1", "customer", customer)
        for n, amount in enumerate(("120.00", "80.00", "95.00", "150.00"), start=1):
            inv = client.create(
                "Invoice",
                {
                    "CustomerRef": {"value": customer["Id"]},
                    "DocNumber": f"QB-{realm[-4:]}-{n}",
                    "Line": [
                        {
                            "Amount": amount,
                            "DetailType": "SalesItemLineDetail",
                            "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}, "Qty": 1, "UnitPrice": amount},
                        }
                    ],
                },
                request_id=b.new_id("rq"),
            )
            books.invoices[f"appointment:a{n}"] = inv
            _record(books.tenant_id, realm, f"appointment:a{n}", "invoice", inv)
        control.wait_webhooks_idle()
    settle(stack, control)
    return books


def settle(stack: Any, control: EmulatorControl) -> None:
    for _ in range(3):
        control.wait_webhooks_idle()
        stack.wait_idle(timeout=60)


def edit_in_qbo(control: EmulatorControl, books: Books) -> None:
    """A QBO user edits invoice a1, deletes a2, voids a3 and records a payment of 65.00: 40.00 against a4 and
    25.00 against a1."""
    a1, a2, a3, a4 = (books.invoices[f"appointment:a{n}"] for n in range(1, 5))
    line = dict(a1["Line"][0])
    line.update(Amount="135.00", SalesItemLineDetail={**line["SalesItemLineDetail"], "UnitPrice": "135.00"})
    control.ui(books.realm, "Invoice", "update", {"Id": a1["Id"], "Line": [line]})
    control.ui(books.realm, "Invoice", "delete", {"Id": a2["Id"]})
    control.ui(books.realm, "Invoice", "void", {"Id": a3["Id"]})
    control.ui(
        books.realm,
        "Payment",
        "create",
        {
            "CustomerRef": a4["CustomerRef"],
            "TotalAmt": "65.00",
            "Line": [
                {"Amount": "40.00", "LinkedTxn": [{"TxnId": a4["Id"], "TxnType": "Invoice"}]},
                {"Amount": "25.00", "LinkedTxn": [{"TxnId": a1["Id"], "TxnType": "Invoice"}]},
            ],
        },
    )


def callbacks_for(receiver: Receiver, books: Books) -> list[dict[str, Any]]:
    return [c for c in receiver.bodies() if c["tenant_id"] == books.tenant_id]


def assert_expected_callbacks(receiver: Receiver, books: Books) -> None:
    from shared.domain import signing

    got = callbacks_for(receiver, books)
    by_type = {(c["type"], c["object_key"]): c for c in got}
    assert sorted(by_type) == [
        ("invoice.deleted_in_qbo", "appointment:a2"),
        ("invoice.updated_in_qbo", "appointment:a1"),
        ("invoice.voided_in_qbo", "appointment:a3"),
        ("payment.recorded_in_qbo", "appointment:a1"),
        ("payment.recorded_in_qbo", "appointment:a4"),
    ]
    assert len(got) == 5, "each change is told once"
    assert by_type[("invoice.updated_in_qbo", "appointment:a1")]["data"]["total"] == 135.0
    assert by_type[("invoice.updated_in_qbo", "appointment:a1")]["data"]["previous"]["total"] == 120.0
    assert by_type[("invoice.voided_in_qbo", "appointment:a3")]["data"]["total"] == 0.0
    for key, amount in (("appointment:a4", 40.0), ("appointment:a1", 25.0)):
        pay = by_type[("payment.recorded_in_qbo", key)]["data"]
        assert pay["amount"] == amount and pay["payment_total"] == 65.0
        assert pay["qbo_invoice_id"] == books.invoices[key]["Id"]
    for headers, body in receiver.requests:
        if json.loads(body)["tenant_id"] != books.tenant_id:
            continue
        assert headers[signing.TENANT_HEADER] == books.tenant_id
        signing.verify(body, headers[signing.SIGNATURE_HEADER], [books.secret], now=time.time(), tolerance_s=300)


def assert_ledger_follows_qbo(books: Books) -> None:
    from shared.adapters.dynamo import ObjectItem

    def slot(key: str, name: str = "invoice") -> dict[str, Any]:
        return dict(ObjectItem.get(f"OBJ#{books.tenant_id}#{key}", "OBJ", consistent_read=True).qbo[name])

    assert slot("appointment:a1")["total"] == 135.0
    assert slot("appointment:a2")["state"] == "deleted"
    assert slot("appointment:a3")["state"] == "voided"
    for key, amount in (("appointment:a4", 40.0), ("appointment:a1", 25.0)):
        qbo = ObjectItem.get(f"OBJ#{books.tenant_id}#{key}", "OBJ", consistent_read=True).qbo
        [pay] = [v for k, v in qbo.items() if k.startswith("payment:qbo:")]
        assert pay["total"] == amount and pay["origin"] == "qbo"


def test_webhooks_become_signed_callbacks_once_each_and_own_writes_are_not_echoed(world: Any) -> None:
    stack, control, receiver = world
    books = make_books(stack, control, receiver, webhooks=True)
    assert callbacks_for(receiver, books) == [], "qbsync's own creates must not come back as callbacks"
    from shared.adapters.dynamo import NoticeItem

    mine = (NoticeItem.rtype == "notice") & (NoticeItem.realm_id == books.realm)
    outcomes = [n.outcome for n in NoticeItem.scan(mine)]
    assert outcomes == ["echo"] * 5, outcomes  # the customer and four invoice creates, recognised without a read
    reads_before = control.stats(books.realm)["reads"]

    edit_in_qbo(control, books)
    settle(stack, control)

    assert_expected_callbacks(receiver, books)
    assert_ledger_follows_qbo(books)
    # One metered read per non-delete change (update, void, payment); none for the delete, none for echoes.
    assert control.stats(books.realm)["reads"] - reads_before == 3

    # Intuit redelivering the whole history changes nothing: every event id is already stored.
    deliveries = [
        d for d in control.webhook_deliveries() if d.get("status") == 200 and books.realm in (d.get("body") or "")
    ]
    import requests

    for d in deliveries:
        body = d["body"].encode()
        from shared.domain.qbo_notices import intuit_signature

        resp = requests.post(
            stack.urls["api"] + "/webhooks/qbo",
            data=body,
            headers={"intuit-signature": intuit_signature(body, TOKEN), "Content-Type": "application/cloudevents+json"},
            timeout=10,
        )
        assert resp.status_code == 200 and resp.json()["stored"] == 0
    settle(stack, control)
    assert len(callbacks_for(receiver, books)) == 5

    # The payment deleted in QuickBooks: both visits it paid are told, without a read.
    [payment_id] = {c["data"]["qbo_payment_id"] for c in callbacks_for(receiver, books) if c["type"].startswith("pay")}
    reads_before = control.stats(books.realm)["reads"]
    control.ui(books.realm, "Payment", "delete", {"Id": payment_id})
    settle(stack, control)
    deleted = sorted(c["object_key"] for c in callbacks_for(receiver, books) if c["type"] == "payment.deleted_in_qbo")
    assert deleted == ["appointment:a1", "appointment:a4"]
    assert control.stats(books.realm)["reads"] == reads_before


def test_with_webhooks_off_the_cdc_sweep_finds_the_same_changes(world: Any) -> None:
    stack, control, receiver = world
    books = make_books(stack, control, receiver, webhooks=False)
    edit_in_qbo(control, books)
    assert callbacks_for(receiver, books) == []

    result = stack.trigger_schedule("CdcSweepFunction")
    settle(stack, control)

    assert_expected_callbacks(receiver, books)
    assert_ledger_follows_qbo(books)
    report = result["realms"][books.realm]
    kinds = {(d["object_key"], d["kind"]) for d in report["drift"]}
    assert {
        ("appointment:a1", "changed_in_qbo"),
        ("appointment:a2", "missing_in_qbo"),
        ("appointment:a3", "changed_in_qbo"),
    } <= kinds

    # A second sweep finds nothing new: the ledger already holds what QBO has.
    again = stack.trigger_schedule("CdcSweepFunction")["realms"][books.realm]
    settle(stack, control)
    assert again["notices_new"] == 0 and again["drift"] == []
    assert len(callbacks_for(receiver, books)) == 5
