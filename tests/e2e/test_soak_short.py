"""The chaos soak, short (``make soak`` runs the long one): three tenants, two of them sharing a QuickBooks
company, ~60 visits with copays, patient payments, an insurer remittance, a write-off and a refund, delivered
duplicated and reordered while QBO answers 5xx, throttles, commits then drops answers, has an outage, expires the
access tokens and has its connection revoked (then reconnected through the OAuth routes), and sync workers are
killed after their reconcile returned. Pass: no duplicate in QuickBooks, every accepted event accounted for,
every tenant's totals in QuickBooks equal to the platform's to the cent, and no PHI in any request QuickBooks
received nor PHI or token material in anything the run logged."""

from __future__ import annotations

import json

import pytest

from bench.soak import SoakConfig, run_soak

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


def test_short_chaos_soak_passes_exactly() -> None:
    cfg = SoakConfig.quick()
    # Smaller than `make soak --quick` so the suite stays within its budget; every fault kind is still injected,
    # including workers killed after a QuickBooks commit (their objects come back via the retry sweep once
    # the dead worker's lease expires).
    cfg.visits, cfg.phases, cfg.drain_under_faults_s = 30, 4, 10.0
    cfg.echo_logs = False  # thousands of log lines would bury the failure report below (they are still scanned)
    report = run_soak(cfg, log=lambda _m: None)
    # On failure, say what happened in a few lines (CI shows little else of a long run).
    why = json.dumps(
        {
            k: report.get(k)
            for k in ("ok", "events_accepted", "events_by_object_status", "unaccounted_sample", "chaos", "sweeps")
        }
        | {
            "not_at_rest": report["not_at_rest"][:4],
            "totals": {t: v.get("in_qbo") for t, v in report["tenants"].items()},
        },
        default=str,
    )

    assert report["events_accepted"] > 80, why
    assert report["killed_workers"].get("after_reconcile", 0) > 0, why
    assert report["deliveries_posted"] > report["events_accepted"], why  # duplicates were delivered
    assert report["duplicates_in_qbo"] == 0, report["duplicates_sample"]
    assert report["qbsync_documents_not_in_ledger"] == 0, report["orphans_sample"]
    assert report["unaccounted"] == 0, why
    assert report["failed"] == 0 and report["held"] == 0, why
    for tenant, t in report["tenants"].items():
        assert t["in_qbo"] == t["expected"], (tenant, why)
        assert t["invoices"]["in_qbo"] == t["invoices"]["expected"], (tenant, why)
    privacy = report["privacy"]  # every QBO request and every log line of the run, scanned
    assert privacy["qbo_requests_scanned"] > 50 and privacy["log_lines_scanned"] > 0, privacy
    assert privacy["phi_values"] > 20 and privacy["token_values"] > 5, privacy
    assert privacy["phi_in_qbo_requests"] == [] and privacy["phi_in_logs"] == [], privacy
    assert privacy["token_material_in_logs"] == [], privacy
    assert report["ok"], why
