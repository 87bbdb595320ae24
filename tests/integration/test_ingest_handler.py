"""The booking-webhook handler with API Gateway events against in-process AWS (moto): every answer it gives."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from shared.adapters.event_store import events_of_object
from shared.domain.events import PHI_FIELDS
from tests import builders as b
from tests.integration.conftest import Poster, TenantKeys, new_tenant, raw_table_dump, stored_events


# ---------------------------------------------------------------- 202 and idempotency
def test_one_event_is_stored_and_answered_202_with_its_id(post: Poster, tenant: TenantKeys) -> None:
    ev = b.appointment_completed(tenant_id=tenant.tenant_id)
    answer = post(ev)
    assert answer.status == 202
    assert answer.body == {"status": "accepted", "event_ids": [ev["id"]]}
    [item] = stored_events(tenant.tenant_id)
    assert item["pk"] == f"EVT#{tenant.tenant_id}#{ev['id']}"
    assert item["sk"] == "EVT" and item["rtype"] == "event"
    assert item["gsi1pk"] == f"OBJ#{tenant.tenant_id}#appointment:{ev['data']['appointment_id']}"
    assert item["gsi1sk"] == f"{1:020d}#{ev['id']}"
    assert len(item["body_sha256"]) == 64


def test_every_event_type_is_accepted(post: Poster, tenant: TenantKeys) -> None:
    events = [build(tenant_id=tenant.tenant_id) for build in b.ALL_BUILDERS]
    answer = post(b.batch(*events))
    assert answer.status == 202, answer.body
    assert {e["type"] for e in stored_events(tenant.tenant_id)} == {e["type"] for e in events}


def test_a_repeat_gets_the_first_answer_and_stores_nothing_new(post: Poster, tenant: TenantKeys) -> None:
    ev = b.payment_collected(tenant_id=tenant.tenant_id)
    first = post(ev)
    again = post(ev)
    assert (again.status, again.raw) == (first.status, first.raw) == (202, again.raw)
    assert len(stored_events(tenant.tenant_id)) == 1


def test_a_batch_repeating_stored_events_stores_only_the_new_ones(post: Poster, tenant: TenantKeys) -> None:
    old = [b.payment_collected(tenant_id=tenant.tenant_id) for _ in range(3)]
    assert post(b.batch(*old)).status == 202
    new = [b.credit_issued(tenant_id=tenant.tenant_id) for _ in range(2)]
    answer = post(b.batch(old[1], new[0], old[2], new[1]))
    assert answer.status == 202
    assert answer.body["event_ids"] == [old[1]["id"], new[0]["id"], old[2]["id"], new[1]["id"]]
    assert len(stored_events(tenant.tenant_id)) == 5


def test_a_reused_id_with_a_different_body_is_409_naming_id(post: Poster, tenant: TenantKeys) -> None:
    ev = b.payment_collected(tenant_id=tenant.tenant_id, amount="40.00")
    assert post(ev).status == 202
    changed = {**ev, "data": {**ev["data"], "amount": "45.00"}}
    answer = post(changed)
    assert answer.status == 409
    assert answer.body["field"] == "id"
    [item] = stored_events(tenant.tenant_id)
    assert item["data"]["amount"] == "40.00"


def test_a_batch_reusing_an_id_with_a_different_body_is_409_and_stores_nothing(
    post: Poster, tenant: TenantKeys
) -> None:
    ev = b.payment_collected(tenant_id=tenant.tenant_id)
    assert post(ev).status == 202
    fresh = b.patient_upserted(tenant_id=tenant.tenant_id)
    changed = {**ev, "version": 2}
    answer = post(b.batch(fresh, changed))
    assert answer.status == 409
    assert answer.body["field"] == "events[1].id"
    assert [e["event_id"] for e in stored_events(tenant.tenant_id)] == [ev["id"]]


def test_the_same_event_with_only_phi_or_formatting_changed_is_a_repeat(post: Poster, tenant: TenantKeys) -> None:
    ev = b.patient_upserted(tenant_id=tenant.tenant_id, occurred_at="2026-01-20T10:00:00Z")
    assert post(ev).status == 202
    same = {**ev, "occurred_at": "2026-01-20T11:00:00+01:00", "data": {**ev["data"], "notes": "new note"}}
    assert post(same).status == 202
    assert len(stored_events(tenant.tenant_id)) == 1


def test_twenty_concurrent_duplicates_store_one_event_and_get_identical_answers(
    post: Poster, tenant: TenantKeys
) -> None:
    ev = b.appointment_completed(tenant_id=tenant.tenant_id)
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda _: post(ev), range(20)))
    assert {(a.status, a.raw) for a in answers} == {(202, answers[0].raw)}
    assert len(stored_events(tenant.tenant_id)) == 1


def test_older_and_newer_versions_of_an_object_are_both_stored(post: Poster, tenant: TenantKeys) -> None:
    newer = b.payment_updated(tenant_id=tenant.tenant_id, version=5, amount="50.00")
    pid = newer["data"]["payment_id"]
    older = b.payment_collected(tenant_id=tenant.tenant_id, version=3, payment_id=pid, amount="40.00")
    assert post(newer).status == 202
    assert post(older).status == 202
    rows = events_of_object(tenant.tenant_id, f"payment:{pid}")
    assert [(r["version"], r["data"]["amount"]) for r in rows] == [(3, "40.00"), (5, "50.00")]


# ---------------------------------------------------------------- 400 / 422: nothing stored
def test_a_batch_with_one_bad_event_is_400_naming_the_field_and_stores_nothing(
    post: Poster, tenant: TenantKeys
) -> None:
    events = [b.payment_collected(tenant_id=tenant.tenant_id) for _ in range(3)]
    events.append(b.appointment_completed(tenant_id=tenant.tenant_id, lines=[b.line(unit_price="-5.00")]))
    answer = post(b.batch(*events))
    assert answer.status == 400
    assert answer.body["field"] == "events[3].data.lines[0].unit_price"
    assert answer.body["details"]["problems"][0]["field"] == "events[3].data.lines[0].unit_price"
    assert stored_events(tenant.tenant_id) == []


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e.pop("occurred_at"), "occurred_at"),
        (lambda e: e.update(version=-1), "version"),
        (lambda e: e.update(occurred_at="2026-01-20T10:00:00"), "occurred_at"),
        (lambda e: e.update(unexpected=1), "unexpected"),
        (lambda e: e["data"].pop("amount"), "data.amount"),
        (lambda e: e["data"].update(applies_to=[{"amount": "1.00"}]), "data.applies_to[0]"),
    ],
)
def test_an_invalid_event_is_400_naming_the_field(post: Poster, tenant: TenantKeys, mutate: Any, field: str) -> None:
    ev = b.payment_collected(tenant_id=tenant.tenant_id)
    mutate(ev)
    answer = post(ev)
    assert answer.status == 400
    assert answer.body["error"] == "BadRequest"
    assert answer.body["field"] == field
    assert stored_events(tenant.tenant_id) == []


def test_malformed_json_is_400(post: Poster, tenant: TenantKeys) -> None:
    answer = post(b'{"id": "x", "type": ')
    assert answer.status == 400
    assert "not valid JSON" in answer.body["message"]


@pytest.mark.parametrize("body", [b"[]", b"42", b'{"events": []}', b'{"events": {}}'])
def test_a_body_that_is_not_an_event_or_a_batch_is_400(post: Poster, body: bytes) -> None:
    assert post(body).status == 400


def test_more_than_100_events_is_400_naming_events(post: Poster, tenant: TenantKeys) -> None:
    answer = post(b.batch(*[b.patient_upserted(tenant_id=tenant.tenant_id) for _ in range(101)]))
    assert (answer.status, answer.body["field"]) == (400, "events")


def test_duplicate_ids_inside_a_batch_are_400_naming_the_repeat(post: Poster, tenant: TenantKeys) -> None:
    ev = b.payment_collected(tenant_id=tenant.tenant_id)
    answer = post(b.batch(b.patient_upserted(tenant_id=tenant.tenant_id), ev, dict(ev)))
    assert (answer.status, answer.body["field"]) == (400, "events[2].id")
    assert stored_events(tenant.tenant_id) == []


def test_an_event_for_another_tenant_is_400_and_nothing_is_stored(post: Poster, tenant: TenantKeys) -> None:
    other = new_tenant("Other clinic")
    answer = post(
        b.batch(b.patient_upserted(tenant_id=tenant.tenant_id), b.patient_upserted(tenant_id=other.tenant_id))
    )
    assert (answer.status, answer.body["field"]) == (400, "events[1].tenant_id")
    assert stored_events(tenant.tenant_id) == stored_events(other.tenant_id) == []


def test_an_unknown_event_type_is_422_naming_type(post: Poster, tenant: TenantKeys) -> None:
    ev = b.event("appointment.teleported", {"appointment_id": "a1"}, tenant_id=tenant.tenant_id)
    answer = post(b.batch(b.patient_upserted(tenant_id=tenant.tenant_id), ev))
    assert (answer.status, answer.body["field"]) == (422, "events[1].type")
    assert stored_events(tenant.tenant_id) == []


# ---------------------------------------------------------------- 401 / 404 / 413 / 415
def test_a_bad_signature_is_401(post: Poster, tenant: TenantKeys) -> None:
    answer = post(b.patient_upserted(tenant_id=tenant.tenant_id), secret="not-the-secret")
    assert (answer.status, answer.body["field"]) == (401, "X-Qbsync-Signature")


def test_a_body_changed_after_signing_is_401(post: Poster, tenant: TenantKeys) -> None:
    body = b.to_body(b.patient_upserted(tenant_id=tenant.tenant_id))
    headers = b.signed_headers(body, tenant.tenant_id, tenant.secret)
    answer = post(body.replace(b"Ada", b"Eve"), headers=headers, signed=False)
    assert answer.status == 401


def test_a_stale_timestamp_is_401(post: Poster, tenant: TenantKeys) -> None:
    answer = post(b.patient_upserted(tenant_id=tenant.tenant_id), ts=b.stale_ts(301))
    assert answer.status == 401
    assert "tolerance" in answer.body["message"]


@pytest.mark.parametrize("missing", ["X-Qbsync-Tenant", "X-Qbsync-Signature"])
def test_a_missing_auth_header_is_401_naming_it(post: Poster, tenant: TenantKeys, missing: str) -> None:
    answer = post(b.patient_upserted(tenant_id=tenant.tenant_id), headers={missing: None})  # type: ignore[dict-item]
    assert (answer.status, answer.body["field"]) == (401, missing)


def test_another_tenants_key_is_401(post: Poster, tenant: TenantKeys) -> None:
    other = new_tenant("Other clinic")
    answer = post(b.patient_upserted(tenant_id=tenant.tenant_id), secret=other.secret)
    assert answer.status == 401
    assert stored_events(tenant.tenant_id) == []


def test_an_unknown_tenant_is_404(post: Poster) -> None:
    answer = post(b.patient_upserted(tenant_id="nobody"), tenant_id="nobody", secret="whatever")
    assert (answer.status, answer.body["field"]) == (404, "X-Qbsync-Tenant")


def test_a_body_over_the_limit_is_413_before_anything_else(post: Poster, tenant: TenantKeys) -> None:
    answer = post(b"{" + b" " * 300_000 + b"}", headers={"Content-Type": "text/plain"}, signed=False)
    assert answer.status == 413


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_wrong_content_type_is_415(post: Poster, tenant: TenantKeys, content_type: str | None) -> None:
    answer = post(b.patient_upserted(tenant_id=tenant.tenant_id), headers={"Content-Type": content_type})  # type: ignore[dict-item]
    assert answer.status == 415


def test_json_with_a_charset_is_accepted(post: Poster, tenant: TenantKeys) -> None:
    answer = post(
        b.patient_upserted(tenant_id=tenant.tenant_id), headers={"Content-Type": "application/json; charset=UTF-8"}
    )
    assert answer.status == 202


# ---------------------------------------------------------------- PHI, rotation, openapi, imports
def test_phi_fields_are_never_stored(post: Poster, tenant: TenantKeys) -> None:
    events = [build(tenant_id=tenant.tenant_id, **b.PHI_SAMPLE) for build in b.ALL_BUILDERS[:10]]
    assert post(b.batch(*events)).status == 202
    for item in stored_events(tenant.tenant_id):
        assert not PHI_FIELDS & set(item["data"])
        assert set(item["phi_dropped"]) == set(b.PHI_SAMPLE)
    dump = raw_table_dump()
    for value in ("1815-12-10", "M54.5", "lower back pain", "prefers mornings", "XJH123456789", "St James"):
        assert value not in dump


def test_both_secrets_work_during_a_rotation(post: Poster, tenant: TenantKeys) -> None:
    from shared.services.tenants import rotate_signing_secret

    assert post(b.patient_upserted(tenant_id=tenant.tenant_id)).status == 202  # caches the old secret
    new_secret = rotate_signing_secret(tenant.tenant_id).signing_secret
    assert post(b.patient_upserted(tenant_id=tenant.tenant_id), secret=new_secret).status == 202
    assert post(b.patient_upserted(tenant_id=tenant.tenant_id), secret=tenant.secret).status == 202
    assert post(b.patient_upserted(tenant_id=tenant.tenant_id), secret=[new_secret, tenant.secret]).status == 202
    third = rotate_signing_secret(tenant.tenant_id).signing_secret
    assert post(b.patient_upserted(tenant_id=tenant.tenant_id), secret=third).status == 202
    assert post(b.patient_upserted(tenant_id=tenant.tenant_id), secret=tenant.secret).status == 401


def test_get_openapi_serves_the_committed_document(webhook: Any) -> None:
    import json

    from shared.domain.openapi import DOC_PATH

    resp = webhook.lambda_handler(b.api_gateway_event("GET", "/v1/openapi.json"), b.lambda_context())
    assert resp["statusCode"] == 200
    assert json.loads(resp["body"]) == json.loads(DOC_PATH.read_text())


def test_an_unexpected_bug_is_500_without_echoing_the_payload(
    post: Poster, tenant: TenantKeys, webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(self: Any, events: Any) -> dict[str, str]:
        raise RuntimeError("secret diagnosis M54.5")

    monkeypatch.setattr("shared.adapters.event_store.EventStore.insert_all", boom)
    answer = post(b.patient_upserted(tenant_id=tenant.tenant_id))
    assert answer.status == 500
    assert "M54.5" not in answer.raw


def test_the_handler_imports_no_qbo_oauth_or_http_client(aws_env: dict[str, str]) -> None:
    code = (
        "import sys, functions.booking_webhook.handler\n"
        # (intuit-oauth's .pth registers an empty 'intuitlib' namespace at start-up; its modules are the cost)
        "bad = [m for m in sys.modules if m.startswith(('intuitlib.', 'requests', 'quickbooks', 'shared.adapters.qbo',"
        " 'aws_xray_sdk'))]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=aws_env, check=True)
    assert out.stdout.strip() == ""
