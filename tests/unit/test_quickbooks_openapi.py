"""docs/quickbooks-openapi.json is the generated one, and the project's OpenAPI documents cover every route of the
API in template.yaml."""

from __future__ import annotations

import json
from typing import Any

from infra.template_check import ROOT, load_template
from shared.domain import quickbooks_openapi


def test_the_committed_document_is_the_generated_one() -> None:
    assert quickbooks_openapi.DOC_PATH.read_text() == quickbooks_openapi.render(), (
        "run: .venv/bin/python -m shared.domain.quickbooks_openapi"
    )
    assert quickbooks_openapi.main(["--check"]) == 0


def _template_routes() -> set[tuple[str, str]]:
    routes = set()
    for res in load_template()["Resources"].values():
        for ev in (res.get("Properties", {}).get("Events") or {}).values():
            if ev["Type"] == "Api":
                routes.add((ev["Properties"]["Method"].lower(), ev["Properties"]["Path"]))
    return routes


def _documented() -> set[tuple[str, str]]:
    docs: list[dict[str, Any]] = [
        json.loads((ROOT / "docs" / name).read_text())
        for name in ("openapi.json", "ops-openapi.json", "quickbooks-openapi.json")
    ]
    return {(method, path) for doc in docs for path, ops in doc["paths"].items() for method in ops}


def test_every_route_of_the_template_is_in_an_openapi_document() -> None:
    routes, documented = _template_routes(), _documented()
    # The ops API is one proxy route in the template; its document lists what the proxy serves.
    ops_proxy = {("any", "/ops/{proxy+}")}
    assert ops_proxy <= routes
    assert any(path.startswith("/ops/") for _, path in documented)
    assert routes - ops_proxy - documented == set()
    assert {("get", "/oauth/connect"), ("post", "/webhooks/qbo")} <= routes
