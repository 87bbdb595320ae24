"""docs/ops-openapi.json is what the ops handler serves: the file matches the route table, and every
documented route reaches its view (401 without the key, never the router's 404)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.services.ops import ROUTES, openapi
from tests.unit.ops_support import OPS_KEY, call

DOC = Path(__file__).resolve().parents[2] / "docs" / "ops-openapi.json"


@pytest.fixture
def ops(moto_aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("OPS_LOCAL_KEY", OPS_KEY)
    from shared.config import reset_settings_cache

    reset_settings_cache()
    from functions.ops_api import handler

    yield handler


def test_the_committed_document_is_current() -> None:
    assert json.loads(DOC.read_text()) == openapi(), "run: python -m shared.services.ops"


def test_every_documented_route_is_served(ops: Any) -> None:
    doc = json.loads(DOC.read_text())
    assert doc["openapi"] == "3.1.0"
    documented = [(m.upper(), p) for p, ops_ in doc["paths"].items() for m in ops_]
    assert len(documented) == len(ROUTES)
    for method, path in documented:
        concrete = (
            path.replace("{tenant}", "t1").replace("{object_key}", "appointment:a1").replace("{message_id}", "m-1")
        )
        status, body = call(ops, method, concrete, {} if method in ("POST", "PUT") else None, key=None)
        assert status == 401, (method, path, status, body)
