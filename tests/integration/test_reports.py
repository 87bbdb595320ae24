"""Reports against the QBO emulator: a physical-therapy week with copays, an insurer remittance (contractual
adjustments), a write-off and a refund, synced by the real engine once for the module. The reports give the
scenario's figures to the cent, and ``verify`` finds an invoice a QuickBooks user edited."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner

from infra.demo.company import LOCATIONS, PROVIDERS
from infra.demo.scenario import Scenario, pt_week
from infra.qbo_emulator import EmulatorServer
from infra.qbo_emulator.control import EmulatorControl
from shared.adapters import dynamo
from shared.adapters.qbo import pacing
from shared.config import reset_settings_cache
from shared.domain.reports import Period
from shared.services.reports import ReportService
from shared.services.sweeps import retry_sweep
from tests.conftest import BASE_ENV, table_definition
from tests.sync_harness import SyncHarness

WEEK = Period(date(2026, 11, 2), date(2026, 11, 6))


@pytest.fixture(scope="module")
def synced() -> Iterator[tuple[SyncHarness, Scenario]]:
    """One emulated company + in-process moto ledger, with the week synced (shared: syncing takes ~30 s)."""
    from moto import mock_aws

    server = EmulatorServer(port=0).start()
    control = EmulatorControl(server.url)
    with pytest.MonkeyPatch.context() as mp, mock_aws():
        for k in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL")]:
            mp.delenv(k)
        for k, v in {**BASE_ENV, "QBO_BASE_URL": server.url, "QBO_TIMEOUT_S": "2"}.items():
            mp.setenv(k, v)
        boto3.client("dynamodb").create_table(**table_definition())
        sqs = boto3.client("sqs")
        for name, var in (("DeadLetterQueue", "DLQ_URL"), ("CallbackQueue", "CALLBACK_QUEUE_URL")):
            mp.setenv(var, sqs.create_queue(QueueName=name)["QueueUrl"])
        reset_settings_cache()
        dynamo.reset_binding()
        pacing.reset_pacers()
        h = SyncHarness(control, control.create_realm(company_name="Reports PT")["realm_id"])
        h.setup_company()
        sc = pt_week(
            h.tenant_id, appointments=16, patients=6, copays=True, remittances=True, write_off=True, refund=True
        )
        h.store(sc.events)
        later = datetime.now(UTC) + timedelta(hours=1)
        for _ in range(20):
            h.drain()
            if not any(retry_sweep(now=later).values()):
                break
        try:
            yield h, sc
        finally:
            reset_settings_cache()
            dynamo.reset_binding()
            server.stop()


def service(h: SyncHarness) -> ReportService:
    return ReportService(client_factory=h.service._client_factory)


def D(v: Any) -> Decimal:
    return Decimal(str(v))


# ---------------------------------------------------------------------------------------------- revenue
def test_revenue_report_gives_the_weeks_figures_to_the_cent(synced: tuple[SyncHarness, Scenario]) -> None:
    h, sc = synced
    r = service(h).revenue(h.tenant_id, WEEK).to_json()
    t = r["totals"]
    assert (t["visits"], t["invoiced"], t["collected"], t["adjusted"], t["written_off"], t["outstanding"]) == (
        16,
        "4028.00",
        "3496.20",
        "511.80",
        "20.00",
        "0.00",
    )
    assert (t["unapplied"], t["refunded"]) == ("10.00", "10.00")  # the $10 overpayment, refunded
    # ... which is what the scenario says the books must show
    assert D(t["invoiced"]) == sc.total and D(t["collected"]) == sc.received
    assert D(t["adjusted"]) + D(t["written_off"]) == sc.credited_total and D(t["outstanding"]) == sc.open_balance
    assert {k: D(f["invoiced"]) for k, f in r["by"]["provider"].items()} == sc.by_provider
    assert {k: D(f["invoiced"]) for k, f in r["by"]["location"].items()} == sc.by_location
    assert r["by"]["provider"]["prov-a"] == {
        "visits": 8,
        "invoiced": "2425.25",
        "collected": "2125.00",
        "adjusted": "300.25",
        "written_off": "0.00",
        "outstanding": "0.00",
    }
    assert r["by"]["payer_type"]["insurance"]["invoiced"] == "2859.00"
    assert r["by"]["payer_type"]["self_pay"]["written_off"] == "20.00"
    assert r["by"]["modality"]["telehealth"]["invoiced"] == "875.75"
    assert {k: v["invoiced"] for k, v in r["by"]["service"].items()} == {
        "97110": "1010.00",
        "97140": "686.50",
        "97161": "1050.00",
        "97530": "1281.50",
    }


def test_verify_reads_the_same_totals_back_from_quickbooks_in_seven_reads(
    synced: tuple[SyncHarness, Scenario],
) -> None:
    h, sc = synced
    v = service(h).revenue(h.tenant_id, WEEK, verify=True).to_json()["verify"]
    assert v["matches"] and v["differences"] == []
    q = v["qbo_totals"]
    assert (q["invoices"], q["invoiced"], q["outstanding"]) == (16, "4028.00", "0.00")
    assert q["by_class"] == {PROVIDERS[p]: str(a) for p, a in sc.by_provider.items()}
    assert q["by_department"] == {LOCATIONS[loc]: str(a) for loc, a in sc.by_location.items()}
    assert v["qbo_reads"] == 7  # Invoice, Payment, CreditMemo, Class, Department, Item, Account: one query each


# ---------------------------------------------------------------------------------------------- visits
def test_every_visit_adds_up_copay_reimbursement_adjustment_write_off(synced: tuple[SyncHarness, Scenario]) -> None:
    h, sc = synced
    r = service(h).visits(h.tenant_id, WEEK, verify=True)
    assert r["issues"] == []
    assert r["totals"]["charges"] == "4028.00" and r["totals"]["balance"] == "0.00"
    for v in r["visits"]:
        aid = v["visit"].split(":")[1]
        assert D(v["charges"]) == sc.invoiced[aid]
        assert D(v["copay"]) == sc.copaid.get(aid, 0)
        assert D(v["insurer_paid"]) == sc.remitted.get(aid, 0)
        assert D(v["patient_paid"]) == sc.paid.get(aid, 0)
        assert D(v["adjustments"]) == sc.adjusted.get(aid, 0)
        assert D(v["write_offs"]) + D(v["credits"]) == sc.credited.get(aid, 0)
        assert D(v["balance"]) == D(v["qbo_balance"]) == sc.balance(aid)
    assert (r["totals"]["copay"], r["totals"]["insurer_paid"], r["totals"]["patient_paid"]) == (
        "300.00",
        "2047.20",
        "1149.00",
    )


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_writes_json_csv_and_chart(synced: tuple[SyncHarness, Scenario], tmp_path: Path) -> None:
    from shared.cli.main import cli

    h, _ = synced
    csv_file, png = tmp_path / "revenue.csv", tmp_path / "revenue.png"
    args = ["reports", "revenue", "--tenant", h.tenant_id, "--from", "2026-11-02", "--to", "2026-11-06"]
    res = CliRunner().invoke(cli, [*args, "--json", "--csv", str(csv_file), "--chart", str(png)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["totals"]["invoiced"] == "4028.00"
    lines = csv_file.read_text().splitlines()
    assert lines[0].startswith("section,dimension,key,visits,invoiced,collected")
    assert "totals,all,all,16,4028.00,3496.20,511.80,20.00,0.00" in lines[1]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    res = CliRunner().invoke(cli, ["reports", "visits", *args[2:]])
    assert res.exit_code == 0 and "every visit adds up" in res.output


# ---------------------------------------------------------------------------------------------- a QBO user edits
def test_verify_finds_an_invoice_line_edited_in_quickbooks(synced: tuple[SyncHarness, Scenario]) -> None:
    h, _ = synced
    inv = next(i for i in h.invoices() if len(i["Line"]) >= 2 and i["Line"][0]["DetailType"] == "SalesItemLineDetail")
    line = inv["Line"][0]
    detail = line["SalesItemLineDetail"]
    old_amount = D(line["Amount"])
    item_name = {i["Id"]: i["Name"] for i in h.control.books(h.realm_id)["Item"]}[detail["ItemRef"]["value"]]
    edited = json.loads(json.dumps(inv["Line"]))
    edited[0]["Amount"] = float(old_amount + 15)
    edited[0]["SalesItemLineDetail"]["UnitPrice"] = float((old_amount + 15) / D(detail.get("Qty", 1)))
    h.control.ui(h.realm_id, "Invoice", "update", {"Id": inv["Id"], "sparse": True, "Line": edited})
    try:
        r = service(h).revenue(h.tenant_id, WEEK, verify=True).to_json()
        diffs = {(d["document"].split()[1], d["field"]): (d["ledger"], d["qbo"]) for d in r["verify"]["differences"]}
        cents = Decimal("0.01")
        total = D(inv["TotalAmt"]).quantize(cents)
        assert diffs[(inv["Id"], f"Line[{item_name}].Amount")] == (
            str(old_amount.quantize(cents)),
            str((old_amount + 15).quantize(cents)),
        )
        assert diffs[(inv["Id"], "TotalAmt")] == (str(total), str(total + 15))
        assert diffs[(inv["Id"], "Balance")] == ("0.00", "15.00")
        assert r["verify"]["matches"] is False
        assert r["totals"]["invoiced"] == "4028.00"  # the ledger's figure is unchanged; QBO's is 15 more
        assert r["verify"]["qbo_totals"]["invoiced"] == "4043.00"
        assert ("all", "invoiced") in {(d["document"].split()[0], d["field"]) for d in r["verify"]["differences"]}
        visits = service(h).visits(h.tenant_id, WEEK, verify=True)
        (issue,) = visits["issues"]
        assert issue["amount"] == "15.00" and "QuickBooks balance 15.00" in issue["reason"]
        drift = service(h).drift(h.tenant_id, WEEK, verify=True)
        (entry,) = drift["drift"]
        assert entry["kind"] == "changed" and entry["document"].startswith(f"Invoice {inv['Id']} ")
        assert "qbsync retry appointment:" in entry["action"]
    finally:
        h.control.ui(h.realm_id, "Invoice", "update", {"Id": inv["Id"], "sparse": True, "Line": inv["Line"]})
    assert service(h).revenue(h.tenant_id, WEEK, verify=True).verify.matches  # type: ignore[union-attr]
