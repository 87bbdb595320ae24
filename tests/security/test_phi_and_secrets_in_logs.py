"""PHI stays home and secrets stay out of logs: a physical-therapy week with clinical fields goes through the
real ingest handler and the sync engine into the QBO emulator; then every request QuickBooks received, every
log line written and every ledger item are scanned."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.demo.scenario import pt_week
from infra.qbo_emulator.control import EmulatorControl
from tests import builders as b
from tests.integration.conftest import raw_table_dump
from tests.security.conftest import handler_send, make_poster, new_tenant
from tests.sync_harness import SyncHarness

TOKENS_ATTR = "_tokens"  # QboClient keeps its token provider here (EmulatorTokens in the harness)


def _run(
    emulator: EmulatorControl,
    webhook: Any,
    monkeypatch: pytest.MonkeyPatch,
    *,
    settings: dict[str, Any],
    consent: set[str],
) -> tuple[Any, SyncHarness, str]:
    """Ingest the week through the handler (signed, in batches), then sync it. Returns (scenario, harness,
    signing secret)."""
    from shared.adapters.dynamo import EventItem
    from shared.adapters.qbo import pacing
    from shared.config import reset_settings_cache

    emulator.reset()
    monkeypatch.setenv("QBO_BASE_URL", emulator.url)
    monkeypatch.setenv("QBO_TIMEOUT_S", "2")
    reset_settings_cache()
    pacing.reset_pacers()
    keys = new_tenant("PHI clinic")
    sc = pt_week(keys.tenant_id, appointments=8, patients=4, seed=11, phi=True)
    for ev in sc.events:
        if ev["type"] == "patient.upserted" and ev["data"]["patient_id"] in consent:
            ev["data"]["name_consent"] = True
    post = make_poster(handler_send(webhook), keys)
    for i in range(0, len(sc.events), 10):
        assert post(b.batch(*sc.events[i : i + 10])).status == 202
    realm = emulator.create_realm(company_name="PHI PT")["realm_id"]
    h = SyncHarness(emulator, realm, tenant_id=keys.tenant_id)
    h.setup_company()
    if settings:
        from infra.demo.company import mappings

        h.put_tenant(mappings=mappings(), settings=settings)
    for item in sorted(EventItem.scan(EventItem.rtype == "event"), key=lambda i: i.gsi1sk):
        if item.tenant_id == keys.tenant_id:
            h.service.apply_event(item)
    h.drain()
    assert len(h.invoices()) == len(sc.invoiced)
    return sc, h, keys.secret


def _found(text: str, needles: dict[str, str]) -> list[str]:
    return [label for label, value in needles.items() if value and value in text]


def test_default_policy_no_phi_reaches_quickbooks_the_logs_or_the_ledger(
    emulator: EmulatorControl,
    webhook: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")  # the product's level (POWERTOOLS_LOG_LEVEL); libraries log at their defaults
    sc, h, secret = _run(emulator, webhook, monkeypatch, settings={}, consent=set())
    sent = json.dumps(emulator.requests(h.realm_id))
    out = capsys.readouterr()
    logs = out.out + out.err + caplog.text
    needles = sc.phi_values()
    assert _found(sent, needles) == []
    assert _found(logs, needles) == [], [ln for ln in logs.splitlines() if any(v in ln for v in needles.values())][:3]
    assert _found(raw_table_dump(), {k: v for k, v in needles.items() if "name" not in k and "email" not in k}) == []
    # Token material: the access tokens QBO accepted and the tenant's signing secret never reach a log or the
    # ledger (signatures go in headers, so the log must not echo headers either).
    tokens: dict[str, str] = {}
    for client in h.clients:
        for realm, token in getattr(client, TOKENS_ATTR).__dict__.get("_tokens", {}).items():
            tokens[f"access token {realm}"] = token
    assert tokens, "the harness's access tokens are known"
    tokens["signing secret"] = secret
    assert _found(logs, tokens) == []
    assert _found(raw_table_dump(), tokens) == []


def test_full_name_with_consent_sends_only_consenting_patients_names(
    emulator: EmulatorControl, webhook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    consenting = {"pat-001"}
    sc, h, _ = _run(
        emulator, webhook, monkeypatch, settings={"naming_policy": "full_name_with_consent"}, consent=consenting
    )
    customers = [c["DisplayName"] for c in emulator.books(h.realm_id).get("Customer", [])]
    sent = json.dumps(emulator.requests(h.realm_id))
    visited = {e["data"]["patient_id"] for e in sc.events if e["type"] == "appointment.completed"}
    for pid in visited:
        p = sc.patients[pid]
        full = f"{p['first_name']} {p['last_name']}"
        if pid in consenting:
            assert any(full in name for name in customers), (full, customers)
        else:
            assert full not in sent and p["email"] not in sent, pid
    assert _found(sent, sc.phi_values(named=consenting)) == []
