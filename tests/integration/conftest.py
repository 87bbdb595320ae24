"""Fixtures for the booking-webhook ingest: a tenant with a signing secret, a way to post signed requests to
the real handler (directly with API Gateway events, or over HTTP), and the project's local stack."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from infra.qbo_emulator.control import EmulatorControl
from shared.adapters.qbo import pacing
from shared.config import reset_settings_cache
from tests import builders as b
from tests.sync_harness import SyncHarness

ROOT = Path(__file__).resolve().parents[2]


class _Server(ThreadingHTTPServer):
    # http.server listens with a backlog of 5: twenty simultaneous clients on a loaded machine get resets.
    request_queue_size = 64


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    raw: str


@dataclass(frozen=True)
class TenantKeys:
    tenant_id: str
    secret: str


def reset_caches() -> None:
    """Forget every per-container cache (settings, table binding, clients, secrets, the ingest service)."""
    from functions.booking_webhook import handler
    from shared.adapters import dynamo, secrets
    from shared.config import reset_settings_cache

    reset_settings_cache()
    dynamo.reset_binding()
    secrets.reset_client()
    handler.service.cache_clear()


def new_tenant(name: str = "Clinic") -> TenantKeys:
    from shared.services.tenants import create_tenant

    created = create_tenant(b.new_id("clinic"), name)
    return TenantKeys(created.tenant.tenant_id, created.signing_secret)


Poster = Callable[..., Answer]


def make_poster(send: Callable[[str, str, bytes, dict[str, str]], tuple[int, str]], keys: TenantKeys) -> Poster:
    def post(
        doc: Any,
        *,
        secret: str | list[str] | None = None,
        tenant_id: str | None = None,
        ts: int | None = None,
        headers: dict[str, str] | None = None,
        signed: bool = True,
    ) -> Answer:
        body = doc if isinstance(doc, bytes) else b.to_body(doc)
        hdrs = (
            b.signed_headers(body, tenant_id or keys.tenant_id, secret or keys.secret, ts=ts)
            if signed
            else {"Content-Type": "application/json"}
        )
        hdrs.update(headers or {})
        status, raw = send("POST", "/v1/events", body, {k: v for k, v in hdrs.items() if v is not None})
        return Answer(status, json.loads(raw) if raw else {}, raw)

    return post


# ---------------------------------------------------------------- handler level (in-process moto)
@pytest.fixture
def webhook(moto_aws: dict[str, str]) -> Iterator[Any]:
    from functions.booking_webhook import handler

    reset_caches()
    yield handler
    reset_caches()


def handler_send(handler: Any) -> Callable[[str, str, bytes, dict[str, str]], tuple[int, str]]:
    def send(method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        resp = handler.lambda_handler(b.api_gateway_event(method, path, body, headers), b.lambda_context())
        return resp["statusCode"], resp["body"]

    return send


@pytest.fixture
def tenant(webhook: Any) -> TenantKeys:
    return new_tenant()


@pytest.fixture
def post(webhook: Any, tenant: TenantKeys) -> Poster:
    return make_poster(handler_send(webhook), tenant)


# ---------------------------------------------------------------- HTTP
class _MiniGateway:
    """The smallest API Gateway stand-in: serves the handler's two routes over HTTP on 127.0.0.1.

    Used when the project's local stack is not available, so the HTTP behaviour is proven regardless.
    """

    def __init__(self, handler: Any) -> None:
        send = handler_send(handler)

        class Req(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                if path not in ("/v1/events", "/v1/openapi.json"):
                    status, raw = 404, json.dumps({"message": "Missing Authentication Token"})
                else:
                    status, raw = send(self.command, path, body, dict(self.headers.items()))
                data = raw.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Req)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _MiniGateway:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def local_stack() -> Iterator[Any]:
    """The project's local stack (template.yaml's routes served to the real handlers), one per module: the stack
    resets the process's emulated AWS, so two may never be alive at once in one worker."""
    from infra.local.stack import LocalStack

    stack = LocalStack(template=str(ROOT / "template.yaml")).start()
    try:
        yield stack
    finally:
        stack.stop()


def api_url(stack: Any) -> str | None:
    urls = getattr(stack, "urls", None)
    if isinstance(urls, str):
        return urls.rstrip("/")
    if isinstance(urls, dict):
        for key in ("api", "Api", "gateway", "ApiUrl", "http"):
            if isinstance(urls.get(key), str):
                return str(urls[key]).rstrip("/")
    return None


def http_send(base_url: str) -> Callable[[str, str, bytes, dict[str, str]], tuple[int, str]]:
    import requests

    session = requests.Session()

    def send(method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        resp = session.request(method, base_url + path, data=body, headers=headers, timeout=30)
        return resp.status_code, resp.text

    return send


@dataclass
class HttpTarget:
    url: str
    tenant: TenantKeys
    post: Poster
    name: str


@pytest.fixture(params=["mini_gateway", "local_stack"])
def http_api(request: pytest.FixtureRequest) -> Iterator[HttpTarget]:
    """The real handler behind an HTTP endpoint: the project's local stack when it runs, and always the
    in-test mini gateway over in-process moto."""
    if request.param == "local_stack":
        stack = request.getfixturevalue("local_stack")
        url = api_url(stack)
        if url is None:
            pytest.skip("the local stack exposes no API url")
        reset_caches()
        keys = new_tenant()
        yield HttpTarget(url, keys, make_poster(http_send(url), keys), "local_stack")
        reset_caches()
        return
    handler = request.getfixturevalue("webhook")
    keys = new_tenant()
    with _MiniGateway(handler) as gw:
        yield HttpTarget(gw.url, keys, make_poster(http_send(gw.url), keys), "mini_gateway")


# ---------------------------------------------------------------- ledger reads
def stored_events(tenant_id: str) -> list[dict[str, Any]]:
    """Every event item of a tenant, straight from the table (raw attribute values)."""
    from shared.adapters.dynamo import EventItem, bind_table

    bind_table()
    return [
        dict(i.attribute_values)
        for i in EventItem.scan(EventItem.rtype == "event")
        if i.attribute_values.get("tenant_id") == tenant_id
    ]


def raw_table_dump() -> str:
    """The whole table as text (to prove a value appears nowhere)."""
    import boto3

    from shared.config import get_settings

    client = boto3.client("dynamodb", region_name=get_settings().aws_region)
    items = client.scan(TableName=get_settings().ledger_table)["Items"]
    return json.dumps(items, default=str)


def _harness(emulator: EmulatorControl, monkeypatch: pytest.MonkeyPatch, *, coalesce: bool) -> SyncHarness:
    emulator.reset()
    monkeypatch.setenv("QBO_BASE_URL", emulator.url)
    monkeypatch.setenv("QBO_TIMEOUT_S", "2")
    reset_settings_cache()
    pacing.reset_pacers()
    h = SyncHarness(emulator, emulator.create_realm(company_name="Harness PT")["realm_id"], coalesce=coalesce)
    h.setup_company()
    return h


@pytest.fixture
def harness(emulator: EmulatorControl, moto_aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> SyncHarness:
    """The sync engine against a fresh emulated company (items, classes, locations) and moto's ledger."""
    return _harness(emulator, monkeypatch, coalesce=False)


@pytest.fixture
def batching_harness(
    emulator: EmulatorControl, moto_aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> SyncHarness:
    """``harness`` with writes coalesced into batch calls, as the sync worker sends them.

    QBO's 40 batch calls a minute would make these tests wait 1.5 s per batch; the emulator's batch budget and
    the pacer's are raised together (pacing at QBO's real limits has its own tests and the benchmarks)."""
    monkeypatch.setenv("QBO_BATCH_PER_MIN", "1200")
    h = _harness(emulator, monkeypatch, coalesce=True)
    emulator.set_limits(batch_per_minute=1200)
    return h
