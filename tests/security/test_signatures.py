"""Webhook authentication holds against every forgery we can think of (handler level, in-process moto),
and the local gateway survives a slow-loris client.

Each rejection is asserted with its status, the header it names, and an unchanged ledger.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from shared.domain import signing
from tests import builders as b
from tests.security.conftest import Poster, TenantKeys, ledger_size, new_tenant, reset_caches, stored_ids

SIG = signing.SIGNATURE_HEADER
TENANT = signing.TENANT_HEADER


def _rejected(post: Poster, doc: Any, status: int, field: str | None, **kw: Any) -> dict[str, Any]:
    before = ledger_size()
    answer = post(doc, **kw)
    assert answer.status == status, answer.raw
    assert answer.body["error"] and answer.body["message"]
    if field is not None:
        assert answer.body.get("field") == field, answer.raw
    assert ledger_size() == before, "nothing is stored from a rejected request"
    return answer.body


def test_a_correct_signature_is_accepted(post: Poster, tenant: TenantKeys) -> None:
    ev = b.appointment_completed(tenant_id=tenant.tenant_id)
    assert post(ev).status == 202
    assert stored_ids(tenant.tenant_id, [ev["id"]]) == {ev["id"]}


def test_wrong_key_is_401(post: Poster, tenant: TenantKeys) -> None:
    ev = b.appointment_completed(tenant_id=tenant.tenant_id)
    _rejected(post, ev, 401, SIG, secret="not-the-tenants-secret")


def test_tampered_body_is_401(post: Poster, tenant: TenantKeys) -> None:
    ev = b.payment_collected(tenant_id=tenant.tenant_id, amount="40.00")
    signed = b.to_body(ev)
    tampered = signed.replace(b'"40.00"', b'"4000.00"')
    assert tampered != signed
    _rejected(post, tampered, 401, SIG, headers={SIG: b.sign(signed, tenant.secret)})


def test_signature_over_a_different_timestamp_is_401(post: Poster, tenant: TenantKeys) -> None:
    body = b.to_body(b.appointment_completed(tenant_id=tenant.tenant_id))
    now = int(time.time())
    v1 = signing.compute(body, tenant.secret, now - 60)  # a captured signature with a fresh t= put in front
    _rejected(post, body, 401, SIG, headers={SIG: f"t={now},v1={v1}"})


@pytest.mark.parametrize("offset", [-301, -86_400, 301, 86_400], ids=["stale", "day-old", "future", "day-ahead"])
def test_timestamp_outside_tolerance_is_401_even_when_correctly_signed(
    post: Poster, tenant: TenantKeys, offset: int
) -> None:
    ev = b.appointment_completed(tenant_id=tenant.tenant_id)
    body = _rejected(post, ev, 401, SIG, ts=int(time.time()) + offset)
    assert "tolerance" in body["message"]


@pytest.mark.parametrize("offset", [-250, 250])
def test_timestamp_inside_tolerance_is_accepted(post: Poster, tenant: TenantKeys, offset: int) -> None:
    assert post(b.appointment_completed(tenant_id=tenant.tenant_id), ts=int(time.time()) + offset).status == 202


def test_replayed_request_gets_the_same_answer_and_is_stored_once(post: Poster, tenant: TenantKeys) -> None:
    doc = b.batch(*(b.appointment_completed(tenant_id=tenant.tenant_id) for _ in range(3)))
    body = b.to_body(doc)
    headers = b.signed_headers(body, tenant.tenant_id, tenant.secret)
    first = post(body, headers=headers)
    size = ledger_size()
    replays = [post(body, headers=headers) for _ in range(3)]
    assert first.status == 202
    assert all((r.status, r.body) == (first.status, first.body) for r in replays)
    assert ledger_size() == size, "a replay stores nothing new"


def test_replayed_id_with_a_different_body_is_409(post: Poster, tenant: TenantKeys) -> None:
    ev = b.payment_collected(tenant_id=tenant.tenant_id, amount="40.00")
    assert post(ev).status == 202
    forged = {**ev, "data": {**ev["data"], "amount": "4000.00"}}
    _rejected(post, forged, 409, "id")


def test_oversized_body_is_413_before_anything_is_parsed_or_authenticated(post: Poster) -> None:
    from shared.config import get_settings

    limit = get_settings().max_body_bytes
    garbage = b"<" * (limit + 1)  # not JSON, unsigned, no tenant, wrong type: size is checked first
    body = _rejected(post, garbage, 413, None, signed=False, headers={"Content-Type": "text/plain"})
    assert body.get("details", {}).get("limit") == limit or str(limit) in body["message"]


def test_body_at_the_limit_is_not_413(post: Poster, tenant: TenantKeys) -> None:
    from shared.config import get_settings

    limit = get_settings().max_body_bytes
    ev = b.appointment_completed(tenant_id=tenant.tenant_id, pad="")  # unknown data fields are ignored
    raw = b.to_body(ev)
    raw = raw.replace(b'"pad":""', b'"pad":"' + b"p" * (limit - len(raw)) + b'"')
    assert len(raw) == limit
    assert post(raw).status == 202


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1", "application/jsonx", ""],
)
def test_wrong_content_type_is_415_even_with_a_valid_signature(
    post: Poster, tenant: TenantKeys, content_type: str
) -> None:
    _rejected(
        post,
        b.appointment_completed(tenant_id=tenant.tenant_id),
        415,
        "Content-Type",
        headers={"Content-Type": content_type},
    )


@pytest.mark.parametrize("missing", [TENANT, SIG])
def test_missing_auth_header_is_401_naming_it(post: Poster, tenant: TenantKeys, missing: str) -> None:
    _rejected(post, b.appointment_completed(tenant_id=tenant.tenant_id), 401, missing, headers={missing: None})


@pytest.mark.parametrize(
    "header",
    [
        "",
        "   ",
        "v1=abc",
        "t=",
        "t=,v1=abc",
        "t=abc,v1=abc",
        "t=-5,v1=abc",
        "t=1.5,v1=abc",
        "t=\u1369,v1=abc",  # ETHIOPIC DIGIT ONE: str.isdigit() is True, int() refuses it
        "t=\u00b2,v1=abc",  # SUPERSCRIPT TWO
        "t=1,t=2,v1=abc",
        "t={now}",
        "t={now},v1=",
        "t={now};v1=abc",
        "t={now},v1=" + "a" * 2000,
        "t={now}," + ",".join(["v1=00"] * 6),
        "t={now},v2={sig}",
        "{sig}",
        "t={now},v1={sig}\u0000",
        "t={now},v1={SIG}",  # upper-case hex of the right signature... is accepted (case-insensitive hex)
    ],
)
def test_malformed_signature_headers_are_401(post: Poster, tenant: TenantKeys, header: str) -> None:
    ev = b.appointment_completed(tenant_id=tenant.tenant_id)
    body = b.to_body(ev)
    now = int(time.time())
    sig = signing.compute(body, tenant.secret, now)
    value = header.format(now=now, sig=sig, SIG=sig.upper())
    if "{SIG}" in header:
        assert post(body, headers={SIG: value}).status == 202
        return
    _rejected(post, body, 401, SIG, headers={SIG: value})


def test_tenant_a_signature_presented_as_tenant_b_is_401(post: Poster, tenant: TenantKeys) -> None:
    other = new_tenant("Other clinic")
    ev = b.appointment_completed(tenant_id=tenant.tenant_id)
    body = b.to_body(ev)
    # A's correctly signed request, relabelled as B's (B exists): B's secret does not match.
    _rejected(post, body, 401, SIG, headers={TENANT: other.tenant_id, SIG: b.sign(body, tenant.secret)})
    # And the same for an event that claims to be B's inside the body too.
    ev_b = b.appointment_completed(tenant_id=other.tenant_id)
    body_b = b.to_body(ev_b)
    _rejected(post, body_b, 401, SIG, headers={TENANT: other.tenant_id, SIG: b.sign(body_b, tenant.secret)})
    assert stored_ids(other.tenant_id, [ev_b["id"]]) == set()


def test_unknown_tenant_is_404(post: Poster) -> None:
    _rejected(post, b.appointment_completed(), 404, TENANT, tenant_id=b.new_id("ghost"), secret="whatever")


def test_disabled_tenant_is_refused(post: Poster, tenant: TenantKeys) -> None:
    from shared.adapters.tenants import TenantRepository

    repo = TenantRepository()
    t = repo.get(tenant.tenant_id, consistent=True)
    assert t is not None
    repo.replace(dataclasses.replace(t, status="disabled"), expected_updated_at=t.updated_at)
    reset_caches()  # a new container: no cached tenant record
    _rejected(post, b.appointment_completed(tenant_id=tenant.tenant_id), 404, TENANT)


# ---------------------------------------------------------------- slow loris on the local gateway
READ_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def gateway() -> Iterator[Any]:
    """The local stack's gateway (template.yaml's routes, the real handlers) on moto, without DynamoDB Local,
    with a short read timeout so the test is quick (the default is API Gateway-like)."""
    from infra.local import gateway as gw
    from infra.local.stack import LocalStack
    from infra.template_check import ROOT

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gw, "READ_TIMEOUT_S", READ_TIMEOUT_S, raising=False)
        with LocalStack(ROOT / "template.yaml", use_ddb_local=False, schedules_enabled=False) as stack:
            yield stack


def _partial_request(url: str, body_sent: bytes, declared: int) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n{TENANT}: nobody\r\n{SIG}: t=1,v1=00\r\n\r\n"
    ).encode()
    sock.sendall(head + body_sent)
    return sock


def test_a_stalled_partial_body_does_not_block_the_gateway_and_is_cut_off(gateway: Any) -> None:
    url = str(gateway.urls["api"])
    stalled = [_partial_request(url, b'{"events": [', 5000) for _ in range(4)]
    try:
        # Others are served while the stalled clients hold their connections.
        t0 = time.monotonic()
        r = requests.get(f"{url}/v1/openapi.json", timeout=10)
        assert r.status_code == 200 and r.json()["openapi"].startswith("3.1")
        assert time.monotonic() - t0 < 5
        # Each stalled request is answered (4xx) or closed within the gateway's read timeout, not held forever.
        deadline = READ_TIMEOUT_S + 5
        for sock in stalled:
            sock.settimeout(deadline)
            t1 = time.monotonic()
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                data = b""
            assert time.monotonic() - t1 < deadline
            if data:
                status = int(data.split(b" ", 2)[1])
                assert 400 <= status < 500, data[:200]
    finally:
        for sock in stalled:
            sock.close()


def test_slow_loris_threads_do_not_starve_valid_traffic(gateway: Any) -> None:
    """Many concurrent stalled clients; a normal request still gets its answer promptly."""
    url = str(gateway.urls["api"])
    stalled = [_partial_request(url, b"{", 100) for _ in range(20)]
    results: list[int] = []

    def call() -> None:
        results.append(requests.get(f"{url}/v1/openapi.json", timeout=10).status_code)

    try:
        threads = [threading.Thread(target=call) for _ in range(5)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        assert results == [200] * 5
        assert time.monotonic() - t0 < 10
    finally:
        for sock in stalled:
            sock.close()
