"""Ops through the local system (gateway → ops handler, stream → sync worker, QBO emulator), driven by the
``qbsync`` CLI the way an operator would: a missing mapping is listed with its fix, set, retried and synced;
a QBO outage during a burst heals through the retry sweep with nothing left in the dead-letter queue."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner

from infra.demo.run import onboard, post_events
from infra.local.system import LocalSystem
from shared.adapters.dynamo import ObjectItem, bind_table
from shared.cli.main import cli
from tests import builders as b

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def system() -> Iterator[LocalSystem]:
    # DynamoDB Local (the default): moto's in-process server can stall a stream read under the concurrent worker.
    # Backoff starts at 1 s instead of 5 s (RETRY_BASE_S) so the retries these tests wait for come sooner.
    with LocalSystem(schedules_enabled=False, env={"RETRY_BASE_S": "1"}) as s:
        yield s


def qbsync(system: LocalSystem, *args: str) -> Any:
    env = {"QBSYNC_API_URL": system.api_url, "QBSYNC_OPS_KEY": system.urls["ops_key"], "QBSYNC_ACTOR": "ops-alice"}
    result = CliRunner().invoke(cli, [*args, "--json"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    # The stack's handlers run in this process and log to stdout too: keep the CLI's own document.
    docs = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    return next(d for d in reversed(docs) if not ({"level", "_aws"} & set(d)))


def objects(tenant_id: str) -> list[ObjectItem]:
    bind_table()
    return [o for o in ObjectItem.scan(ObjectItem.tenant_id == tenant_id) if o.rtype == "object"]


def sweep_until_settled(system: LocalSystem, tenant_id: str, timeout: float = 120) -> None:
    """What the one-minute RetrySweep schedule does, run as soon as backoffs fall due."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        system.wait_idle(timeout=120)
        pending = [o for o in objects(tenant_id) if o.status in ("retrying", "waiting", "pending") or o.dirty]
        if not pending:
            return
        due = [datetime.fromisoformat(o.next_attempt_at) for o in pending if o.next_attempt_at]
        wait = max(0.0, (min(due) - datetime.now(UTC)).total_seconds()) if due else 1.0
        time.sleep(min(wait + 0.2, 40))
        system.stack.trigger_schedule("RetrySweepFunction")  # type: ignore[union-attr]
    raise AssertionError(f"not settled: {[(o.object_key, o.status) for o in objects(tenant_id)]}")


def test_missing_mapping_listed_with_fix_set_through_cli_retried_and_synced(system: LocalSystem) -> None:
    tenant = "ops-map-clinic"
    realm, secret = onboard(system, tenant, "Ops Mapping PT")
    appt = b.appointment_completed(
        tenant_id=tenant, provider_id="prov-a", location_id="loc-1", lines=[b.line("97999", "40.00")]
    )
    post_events(system.api_url, tenant, secret, [appt])
    system.wait_idle()

    listed = qbsync(system, "failures", "list", "--tenant", tenant)
    assert listed["counts"] == {"missing_mapping": 1}
    failure = listed["items"][0]
    assert failure["mapping"] == "services.97999"
    assert "qbsync mappings set services 97999" in failure["suggested_fix"]
    assert system.control.books(realm).get("Invoice", []) == []

    unmapped = qbsync(system, "mappings", "unmapped", tenant)
    assert unmapped["unmapped"] == {"services": {"97999": 1}}
    out = qbsync(system, "mappings", "set", tenant, "services", "97999=Manual Therapy")
    assert out["retried"] == [failure["object_key"]]
    assert qbsync(system, "failures", "list", "--tenant", tenant)["total"] == 0

    sweep_until_settled(system, tenant)
    invoices = system.control.books(realm).get("Invoice", [])
    assert [float(i["TotalAmt"]) for i in invoices] == [40.0]
    status = qbsync(system, "status", tenant, "--event-id", appt["id"])
    obj = status["objects"][0]
    assert obj["status"] == "synced" and obj["qbo"]["invoice"]["id"] == invoices[0]["Id"]

    audit = qbsync(system, "failures", "audit", "--tenant", tenant)["items"]
    assert [(a["action"], a["actor"]) for a in audit[:2]] == [("mappings_set", "ops-alice"), ("retry", "ops-alice")]
    assert qbsync(system, "mappings", "validate", tenant)["ok"] is True


def test_qbo_outage_during_a_burst_heals_through_the_retry_sweep(system: LocalSystem) -> None:
    tenant = "ops-outage-clinic"
    realm, secret = onboard(system, tenant, "Ops Outage PT")
    before = qbsync(system, "dlq", "list")["depth"]["visible"]
    system.control.set_faults(realm, outage_seconds=60)
    burst = [
        b.appointment_completed(tenant_id=tenant, provider_id="prov-b", location_id="loc-2", lines=[b.line("97110")])
        for _ in range(8)
    ]
    post_events(system.api_url, tenant, secret, burst)
    system.wait_idle()
    assert {o.status for o in objects(tenant) if o.kind == "appointment"} <= {"retrying", "waiting"}
    system.control.advance_clock(61)  # the outage ends (emulator clock)

    sweep_until_settled(system, tenant)
    assert {o.status for o in objects(tenant)} == {"synced"}
    invoices = system.control.books(realm).get("Invoice", [])
    assert len(invoices) == 8 and len({i["DocNumber"] for i in invoices}) == 8
    assert qbsync(system, "failures", "list", "--tenant", tenant)["total"] == 0
    assert qbsync(system, "dlq", "list")["depth"]["visible"] == before
    health = {c["realm_id"]: c for c in qbsync(system, "connections")["items"]}
    assert health[realm]["status"] == "connected"
