"""template.yaml is the one source of wiring: lint it, and check the code agrees with it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.template_check import ROOT, lint, load_template, transform
from shared.adapters.dynamo import LedgerItem


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def transformed(template: dict[str, Any]) -> dict[str, Any]:
    return transform(template)


def test_cfn_lint_passes_on_template_and_on_transformed_output(tmp_path: Any, transformed: dict[str, Any]) -> None:
    assert lint(ROOT / "template.yaml") == []
    out = tmp_path / "transformed.json"
    out.write_text(json.dumps(transformed, default=str))
    assert lint(out) == []


def test_pynamodb_keys_and_indexes_match_the_table(template: dict[str, Any]) -> None:
    props = template["Resources"]["LedgerTable"]["Properties"]
    keys = {k["KeyType"]: k["AttributeName"] for k in props["KeySchema"]}
    assert LedgerItem._hash_keyname == keys["HASH"]
    assert LedgerItem._range_keyname == keys["RANGE"]
    table_indexes = {
        gsi["IndexName"]: {k["KeyType"]: k["AttributeName"] for k in gsi["KeySchema"]}
        for gsi in props["GlobalSecondaryIndexes"]
    }
    model_indexes = {
        idx.Meta.index_name: {
            "HASH": next(a.attr_name for a in idx.Meta.attributes.values() if a.is_hash_key),
            "RANGE": next(a.attr_name for a in idx.Meta.attributes.values() if a.is_range_key),
        }
        for idx in LedgerItem._indexes.values()
    }
    assert model_indexes == table_indexes
    table_projections = {
        gsi["IndexName"]: (gsi["Projection"]["ProjectionType"], sorted(gsi["Projection"].get("NonKeyAttributes", [])))
        for gsi in props["GlobalSecondaryIndexes"]
    }
    model_projections = {
        idx.Meta.index_name: (idx.Meta.projection.projection_type, sorted(idx.Meta.projection.non_key_attributes or []))
        for idx in LedgerItem._indexes.values()
    }
    assert model_projections == table_projections
    # The indexes hold keys (gsi1 also the lease the expired-lease sweep filters on), not copies of items.
    assert table_projections == {"gsi1": ("INCLUDE", ["lease_until"]), "gsi2": ("KEYS_ONLY", [])}
    assert props["TimeToLiveSpecification"]["AttributeName"] == LedgerItem.expires_at.attr_name


def _policy_statements(transformed: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, res in transformed["Resources"].items():
        if res["Type"] != "AWS::IAM::Role":
            continue
        for pol in res["Properties"].get("Policies", []):
            for st in pol["PolicyDocument"]["Statement"]:
                out.append((name, st))
    return out


def test_no_function_policy_grants_star_actions_or_resources(transformed: dict[str, Any]) -> None:
    offenders = []
    for role, st in _policy_statements(transformed):
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st.get("Resource", [])
        resources = resources if isinstance(resources, list) else [resources]
        if any(a == "*" or a.endswith(":*") for a in actions):
            offenders.append((role, "action", actions))
        if any(r == "*" for r in resources):
            offenders.append((role, "resource", resources))
    assert offenders == []


def test_every_function_handler_module_exists(template: dict[str, Any]) -> None:
    for name, res in template["Resources"].items():
        if res["Type"] != "AWS::Serverless::Function":
            continue
        module = res["Properties"]["Handler"].rsplit(".", 1)[0]
        assert (ROOT / (module.replace(".", "/") + ".py")).exists(), f"{name}: {module} missing"


def _alarm_metrics(props: dict[str, Any]) -> list[tuple[str, str]]:
    """(namespace, metric name) of an alarm: its own metric, or each metric its math reads."""
    if "MetricName" in props:
        return [(props["Namespace"], props["MetricName"])]
    stats = [m["MetricStat"]["Metric"] for m in props.get("Metrics", []) if "MetricStat" in m]
    return [(m["Namespace"], m["MetricName"]) for m in stats]


def test_every_alarm_on_a_qbsync_metric_watches_one_the_code_emits(template: dict[str, Any]) -> None:
    """An alarm on a metric nobody emits never fires: each name must be counted somewhere in the code."""
    import re

    code = "\n".join(p.read_text() for d in ("shared", "functions") for p in (ROOT / d).rglob("*.py"))
    emitted = set(re.findall(r"""(?:count|log_unhandled)\([^)]*?"([A-Z][A-Za-z]+)\"""", code))
    alarms = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    watched = {name for props in alarms for ns, name in _alarm_metrics(props) if ns == "qbsync"}

    assert {"SyncFailed", "RequestsFailed", "OAuthRequestsFailed", "OpsRequestsFailed"} <= watched
    assert watched - emitted == set()
