"""Fixtures for the QBO emulator tests (imported explicitly by tests/*/test_emulator_*.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from infra.qbo_emulator import EmulatorControl, EmulatorServer

CLIENT_ID = "test-client"
CLIENT_SECRET = "test-secret"
REDIRECT_URI = "http://localhost:8000/callback"
VERIFIER = "test-verifier-token"


@pytest.fixture(scope="module")
def emulator_server() -> Iterator[EmulatorServer]:
    srv = EmulatorServer(
        port=0,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uris=[REDIRECT_URI],
        verifier_token=VERIFIER,
    ).start()
    yield srv
    srv.stop()


@pytest.fixture
def ctl(emulator_server: EmulatorServer) -> EmulatorControl:
    control = EmulatorControl(emulator_server.url)
    control.reset()
    return control


class Api:
    """Minimal raw client for one realm (so tests see exact statuses and bodies)."""

    def __init__(self, url: str, realm_id: str, token: str) -> None:
        self.base = f"{url}/v3/company/{realm_id}"
        self.realm_id = realm_id
        self.s = requests.Session()
        self.s.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json"})

    def post(self, path: str, body: Any, **params: Any) -> requests.Response:
        params.setdefault("minorversion", 75)
        return self.s.post(f"{self.base}/{path}", json=body, params=params, timeout=10)

    def get(self, path: str, **params: Any) -> requests.Response:
        params.setdefault("minorversion", 75)
        return self.s.get(f"{self.base}/{path}", params=params, timeout=10)

    def query(self, q: str) -> requests.Response:
        return self.s.post(
            f"{self.base}/query",
            data=q.encode(),
            params={"minorversion": 75},
            headers={"Content-Type": "application/text"},
            timeout=10,
        )

    def ok(self, resp: requests.Response) -> dict[str, Any]:
        assert resp.status_code == 200, resp.text
        return resp.json()

    def create(self, entity: str, body: dict[str, Any], **params: Any) -> dict[str, Any]:
        return self.ok(self.post(entity.lower(), body, **params))[entity]

    def customer(self, name: str, **extra: Any) -> dict[str, Any]:
        return self.create("Customer", {"DisplayName": name, **extra})

    def invoice(self, customer_id: str, amount: float = 100.0, **extra: Any) -> dict[str, Any]:
        line = {
            "Amount": amount,
            "DetailType": "SalesItemLineDetail",
            "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": 1, "UnitPrice": amount},
        }
        return self.create("Invoice", {"CustomerRef": {"value": customer_id}, "Line": [line], **extra})


def fault_code(resp: requests.Response) -> str:
    return str(resp.json()["Fault"]["Error"][0]["code"])


@pytest.fixture
def api(ctl: EmulatorControl, emulator_server: EmulatorServer) -> Api:
    realm = ctl.create_realm("4620816365000001", company_name="Test Clinic")
    tokens = ctl.issue_tokens(realm["realm_id"])
    return Api(emulator_server.url, realm["realm_id"], tokens["access_token"])


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records requests and answers with scripted statuses."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.statuses: list[int] = []  # consumed one per request; 200 when empty
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.cond:
                    status = outer.statuses.pop(0) if outer.statuses else 200
                    outer.received.append({"body": body, "headers": dict(self.headers), "status": status})
                    outer.cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/webhooks"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.received) >= n, timeout=timeout)
            return list(self.received)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.stop()
