"""Schema-driven fuzzing (schemathesis) of every route in the project's OpenAPI documents, through the local
gateway and the real handlers: no 5xx, and every rejection is a JSON 4xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from infra.local.system import LocalSystem

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def system() -> Iterator[LocalSystem]:
    with LocalSystem(schedules_enabled=False, quiet=True) as s:
        yield s


ingest = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.json")
ops = schemathesis.openapi.from_path(ROOT / "docs" / "ops-openapi.json")
# 2 ingest operations x 100 cases, 25 ops operations x 12 cases: about 500 requests through the gateway.
INGEST_FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
OPS_FUZZ = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))


def _check(response: object) -> None:
    status = response.status_code  # type: ignore[attr-defined]
    assert status < 500, response.text  # type: ignore[attr-defined]
    if status >= 400:
        body = json.loads(response.text)  # type: ignore[attr-defined]
        assert body.get("error") or body.get("message"), body


@ingest.parametrize()
@INGEST_FUZZ
def test_ingest_routes_never_5xx(case: schemathesis.Case, system: LocalSystem) -> None:
    _check(case.call(base_url=system.api_url, timeout=30))


@ops.parametrize()
@OPS_FUZZ
def test_ops_routes_never_5xx(case: schemathesis.Case, system: LocalSystem) -> None:
    headers = {"X-Qbsync-Ops-Key": str(system.urls["ops_key"]), "X-Qbsync-Actor": "fuzzer"}
    _check(case.call(base_url=system.api_url, headers=headers, timeout=30))
