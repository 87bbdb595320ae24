"""Schema-driven fuzzing (schemathesis) of every route in the project's OpenAPI documents, through the local
gateway and the real handlers: no 5xx, and every rejection is a JSON 4xx.

``POST /v1/events`` is fuzzed twice: as generated (unsigned, so the gateway's signature check answers) and signed
with a real tenant's secret, so the generated bodies reach validation and storage; a signed request that is
rejected must have stored none of its events. Schemathesis' coverage phase (every boundary case the schema
defines, several thousand for the events schema) is off here to keep ``make test`` within its budget;
``QBSYNC_FUZZ_COVERAGE=1`` turns it on."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.core import NotSet

from infra.local.system import LocalSystem
from shared.domain import signing
from tests.security.conftest import stored_ids

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e
TENANT = "fuzz-clinic"


@pytest.fixture(scope="module")
def system() -> Iterator[LocalSystem]:
    with LocalSystem(schedules_enabled=False, quiet=True) as s:
        yield s


@pytest.fixture(scope="module")
def secret(system: LocalSystem) -> str:
    from shared.services.tenants import create_tenant

    return create_tenant(TENANT, "Fuzz Clinic").signing_secret


CONFIG = SchemathesisConfig.from_dict(
    {"phases": {"coverage": {"enabled": os.environ.get("QBSYNC_FUZZ_COVERAGE") == "1"}}}
)
ingest = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.json", config=CONFIG)
ops = schemathesis.openapi.from_path(ROOT / "docs" / "ops-openapi.json", config=CONFIG)
quickbooks = schemathesis.openapi.from_path(ROOT / "docs" / "quickbooks-openapi.json", config=CONFIG)
# 2 ingest operations x 100 cases (the events route twice), 25 ops operations x 12 cases, 4 QuickBooks routes x 25
# cases: ~700 requests.
INGEST_FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
OPS_FUZZ = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
QUICKBOOKS_FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
ACCEPTED: set[str] = set()  # event ids a signed case got stored (a later case may reuse the id)


def _check(response: Any) -> None:
    status = response.status_code
    assert status < 500, response.text
    if status >= 400:
        body = json.loads(response.text)
        assert body.get("error") or body.get("message"), body


def _event_ids(body: Any) -> list[str]:
    """The event ids of a body, read the way ingest splits it: a batch ``{"events": [...]}`` or one event."""
    if not isinstance(body, dict):
        return []
    events = body.get("events") if "events" in body and "type" not in body else [body]
    if not isinstance(events, list):
        return []
    return [e["id"] for e in events if isinstance(e, dict) and isinstance(e.get("id"), str) and e["id"]]


def _as_tenant(body: Any) -> Any:
    """The generated body with its ``tenant_id`` fields naming the signing tenant (else every case is the same
    400), everything else as generated."""
    if not isinstance(body, dict):
        return body
    out = {**body, "tenant_id": TENANT} if "tenant_id" in body else dict(body)
    if isinstance(out.get("events"), list):
        out["events"] = [
            {**e, "tenant_id": TENANT} if isinstance(e, dict) and "tenant_id" in e else e for e in out["events"]
        ]
    return out


@ingest.parametrize()
@INGEST_FUZZ
def test_ingest_routes_never_5xx(case: schemathesis.Case, system: LocalSystem) -> None:
    _check(case.call(base_url=system.api_url, timeout=30))


@ingest.include(path="/v1/events", method="POST").parametrize()
@INGEST_FUZZ
def test_signed_event_batches_never_5xx_and_rejections_store_nothing(
    case: schemathesis.Case, system: LocalSystem, secret: str
) -> None:
    raw = _as_tenant(case.body)
    body = b"" if isinstance(raw, NotSet) else raw if isinstance(raw, bytes) else json.dumps(raw).encode()
    headers = {
        signing.TENANT_HEADER: TENANT,
        signing.SIGNATURE_HEADER: signing.sign(body, secret, int(time.time())),
        "Content-Type": "application/json",
    }
    response = case.call(base_url=system.api_url, headers=headers, data=body, timeout=30)
    _check(response)
    ids = _event_ids(raw)
    if response.status_code == 202:
        ACCEPTED.update(ids)
    else:
        fresh = [i for i in ids if i not in ACCEPTED]
        assert not stored_ids(TENANT, fresh), (response.status_code, response.text)


@ops.parametrize()
@OPS_FUZZ
def test_ops_routes_never_5xx(case: schemathesis.Case, system: LocalSystem) -> None:
    headers = {"X-Qbsync-Ops-Key": str(system.urls["ops_key"]), "X-Qbsync-Actor": "fuzzer"}
    _check(case.call(base_url=system.api_url, headers=headers, timeout=30))


@quickbooks.parametrize()
@QUICKBOOKS_FUZZ
def test_quickbooks_routes_never_5xx(case: schemathesis.Case, system: LocalSystem) -> None:
    """Generated tenants do not exist and generated states were never issued: connect and disconnect answer JSON
    4xx, the webhook 401 (no valid signature), and the callback a 400 page that connects nothing."""
    response = case.call(base_url=system.api_url, timeout=30, allow_redirects=False)
    if (response.headers.get("content-type") or [""])[0].startswith("text/html"):
        assert response.status_code == 400, response.text
    else:
        _check(response)
        assert 400 <= response.status_code < 500, response.text
