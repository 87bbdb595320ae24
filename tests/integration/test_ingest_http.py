"""``POST /v1/events`` over HTTP: the real handler behind an endpoint (the project's local stack when it runs,
and always the in-test mini gateway over in-process moto)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import requests

from tests import builders as b
from tests.integration.conftest import HttpTarget, new_tenant, stored_events


def test_each_answer_over_http(http_api: HttpTarget) -> None:
    post, tid = http_api.post, http_api.tenant.tenant_id
    ev = b.appointment_completed(tenant_id=tid)
    first = post(ev)
    assert (first.status, first.body) == (202, {"status": "accepted", "event_ids": [ev["id"]]})
    repeat = post(ev)
    assert (repeat.status, repeat.raw) == (first.status, first.raw)
    assert post({**ev, "version": 2}).status == 409
    bad = post(b.batch(b.patient_upserted(tenant_id=tid), b.payment_collected(tenant_id=tid, amount="-1")))
    assert (bad.status, bad.body["field"]) == (400, "events[1].data.amount")
    assert post(b'{"nope":').status == 400
    assert post(b.patient_upserted(tenant_id=tid), secret="wrong").status == 401
    assert post(b.patient_upserted(tenant_id=tid), ts=b.stale_ts()).status == 401
    assert post(b.patient_upserted(tenant_id=tid), headers={"X-Qbsync-Signature": None}).status == 401  # type: ignore[dict-item]
    assert post(b.patient_upserted(tenant_id=tid), secret=new_tenant("Other").secret).status == 401
    assert post(b.patient_upserted(tenant_id="ghost"), tenant_id="ghost").status == 404
    assert post(b"{" + b" " * 300_000 + b"}").status == 413
    assert post(b.patient_upserted(tenant_id=tid), headers={"Content-Type": "text/plain"}).status == 415
    assert post(b.event("patient.teleported", {}, tenant_id=tid)).status == 422
    assert len(stored_events(tid)) == 1


def test_twenty_concurrent_duplicates_over_http(http_api: HttpTarget) -> None:
    ev = b.payment_collected(tenant_id=http_api.tenant.tenant_id)
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda _: http_api.post(ev), range(20)))
    assert {(a.status, a.raw) for a in answers} == {(202, answers[0].raw)}
    assert len(stored_events(http_api.tenant.tenant_id)) == 1


def test_a_bad_batch_over_http_stores_nothing(http_api: HttpTarget) -> None:
    tid = http_api.tenant.tenant_id
    events = [b.payment_collected(tenant_id=tid) for _ in range(99)]
    events.append(b.credit_issued(tenant_id=tid, amount="lots"))
    answer = http_api.post(b.batch(*events))
    assert (answer.status, answer.body["field"]) == (400, "events[99].data.amount")
    assert stored_events(tid) == []


def test_openapi_is_served_over_http(http_api: HttpTarget) -> None:
    resp = requests.get(http_api.url + "/v1/openapi.json", timeout=30)
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["openapi"].startswith("3.1")
    assert "/v1/events" in doc["paths"]
