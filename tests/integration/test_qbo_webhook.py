"""``POST /webhooks/qbo`` at handler level (in-process moto): fail-closed signatures, both formats, dedupe."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from shared.adapters.dynamo import NoticeItem
from shared.domain.qbo_notices import intuit_signature
from tests import builders as b

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "qbo_samples"
TOKEN = "00faeec4-08d0-4996-bb37-698ae19f0149"
REALM = "1269959970"


def link_tenant(tenant_id: str, realm: str) -> None:
    b.tenant_row(tenant_id, realm)


@pytest.fixture
def qbo_webhook(moto_aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from functions.qbo_webhook import handler
    from shared.adapters import secrets
    from shared.config import reset_settings_cache

    boto3.client("secretsmanager").create_secret(
        Name="qbsync/qbo-webhook-verifier", SecretString=json.dumps({"verifier_token": TOKEN})
    )
    monkeypatch.setenv("QBO_WEBHOOK_VERIFIER_SECRET_ID", "qbsync/qbo-webhook-verifier")
    reset_settings_cache()
    secrets.reset_client()
    handler.service.cache_clear()
    link_tenant("clinic-1", REALM)
    yield handler
    handler.service.cache_clear()
    secrets.reset_client()


def post(
    handler: Any, body: bytes, *, signature: str | None = "sign", content_type: str = "application/json"
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": content_type}
    if signature == "sign":
        headers["intuit-signature"] = intuit_signature(body, TOKEN)
    elif signature is not None:
        headers["intuit-signature"] = signature
    resp = handler.lambda_handler(b.api_gateway_event("POST", "/webhooks/qbo", body, headers), b.lambda_context())
    return resp["statusCode"], json.loads(resp["body"])


def notices() -> list[NoticeItem]:
    return list(NoticeItem.scan(NoticeItem.rtype == "notice"))


def ce(
    event_id: str, type_: str = "qbo.invoice.updated.v1", realm: str = REALM, entity_id: str = "130"
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "intuit.x",
        "type": type_,
        "time": "2026-01-20T17:02:11Z",
        "intuitentityid": entity_id,
        "intuitaccountid": realm,
    }


def test_the_dotnet_sample_with_its_published_signature_is_stored(qbo_webhook: Any) -> None:
    body = (SAMPLES / "webhook-legacy-dotnet-sdk-test.json").read_bytes()
    status, answer = post(qbo_webhook, body, signature="6q+xGyMirJupwKTh2/WBl2NcdxzxqdIbk3sneKTxLWM=")
    assert status == 200 and answer["stored"] == 1  # the Vendor change is acknowledged, not stored
    [n] = notices()
    assert (n.pk, n.entity, n.entity_id, n.operation, n.source) == (
        f"NOTICE#{REALM}#lg:Customer:43:Create:2016-10-05T03:07:04.000Z",
        "Customer",
        "43",
        "Create",
        "webhook-legacy",
    )


@pytest.mark.parametrize("kind", ["tampered", "wrong-key", "missing"])
def test_bad_signatures_get_401_and_nothing_is_stored(qbo_webhook: Any, kind: str) -> None:
    body = json.dumps([ce("e1")]).encode()
    sig = {
        "tampered": intuit_signature(body.replace(b"130", b"131"), TOKEN),
        "wrong-key": intuit_signature(body, "another-token"),
        "missing": None,
    }[kind]
    status, answer = post(qbo_webhook, body, signature=sig)
    assert status == 401 and answer["error"] == "Unauthorized"
    assert notices() == []


def test_duplicate_delivery_is_stored_once(qbo_webhook: Any) -> None:
    body = json.dumps([ce("evt-1"), ce("evt-2", "qbo.payment.created.v1", entity_id="88")]).encode()
    first = post(qbo_webhook, body, content_type="application/cloudevents+json")
    again = post(qbo_webhook, body, content_type="application/cloudevents+json")
    assert first == (200, {"status": "ok", "stored": 2, "duplicates": 0})
    assert again == (200, {"status": "ok", "stored": 0, "duplicates": 2})
    assert sorted(n.dedupe_key for n in notices()) == ["ce:evt-1", "ce:evt-2"]


def test_unknown_realms_are_acknowledged_but_not_stored(qbo_webhook: Any) -> None:
    body = json.dumps([ce("e1", realm="999"), ce("e2")]).encode()
    assert post(qbo_webhook, body) == (200, {"status": "ok", "stored": 1, "duplicates": 0})
    assert [n.realm_id for n in notices()] == [REALM]


def test_unknown_entity_types_are_acknowledged_and_ignored(qbo_webhook: Any) -> None:
    body = json.dumps([ce("e1", "qbo.gizmo.created.v1"), ce("e2", "qbo.vendor.updated.v1")]).encode()
    assert post(qbo_webhook, body) == (200, {"status": "ok", "stored": 0, "duplicates": 0})
    assert notices() == []


def test_malformed_json_with_a_valid_signature_is_400(qbo_webhook: Any) -> None:
    status, _ = post(qbo_webhook, b"{broken")
    assert status == 400 and notices() == []
