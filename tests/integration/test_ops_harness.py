"""Ops against the QBO emulator with the moto harness (the stack adds nothing here): a dead letter whose QBO
write had in fact committed is redriven without a duplicate; customer matching over 500 customers with
near-duplicates proposes the right matches and never auto-accepts an ambiguous one."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from infra.qbo_emulator.control import EmulatorControl
from shared.adapters.qbo.client import QboClient
from shared.adapters.qbo.types import QboApi
from shared.services.dead_letters import DeadLetterService
from shared.services.matching import MatchingService
from shared.services.sweeps import retry_sweep
from tests import builders as b
from tests.sync_harness import EmulatorTokens, SyncHarness

pytestmark = pytest.mark.integration


def test_dlq_redrive_of_a_write_that_had_committed_creates_no_duplicate(
    harness: SyncHarness, emulator: EmulatorControl
) -> None:
    appt = b.appointment_completed(
        tenant_id=harness.tenant_id, provider_id="prov-a", location_id="loc-1", lines=[b.line("97110", "90.00")]
    )
    key = f"appointment:{appt['data']['appointment_id']}"
    # The invoice write commits in QBO but its answer is lost; then QBO keeps failing until retries run out.
    emulator.set_faults(harness.realm_id, commit_then_drop={"next": 1, "entities": ["Invoice"]})
    harness.store([appt])
    harness.drain()
    assert len(harness.invoices()) == 1  # committed in QBO, unknown to qbsync
    emulator.clear_faults(harness.realm_id)
    emulator.set_faults(harness.realm_id, error_rate=1.0, error_status=503)
    later = datetime.now(UTC) + timedelta(days=1)
    for _ in range(20):
        if harness.service.objects.get(harness.tenant_id, key).status == "failed":  # type: ignore[union-attr]
            break
        retry_sweep(now=later)
        harness.drain()
    assert harness.service.objects.get(harness.tenant_id, key).status == "failed"  # type: ignore[union-attr]
    emulator.clear_faults(harness.realm_id)

    dlq = DeadLetterService()
    letters = dlq.letters(tenant_id=harness.tenant_id)["items"]
    mine = [m for m in letters if m["object_key"] == key]
    assert len(mine) == 1 and mine[0]["type"] == "sync_failure"
    out = dlq.redrive("ops-bob", [mine[0]["message_id"]])
    assert out["results"][mine[0]["message_id"]]["action"] == "retried"
    harness.drain()

    invoices = harness.invoices()
    assert len(invoices) == 1 and float(invoices[0]["TotalAmt"]) == 90.0
    assert harness.service.objects.get(harness.tenant_id, key).status == "synced"  # type: ignore[union-attr]
    assert dlq.letters(tenant_id=harness.tenant_id)["items"] == []


FIRST = ["James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth"]
LAST = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
        "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
        "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
        "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
        "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts"]  # fmt: skip


def test_matching_over_500_customers_proposes_the_right_ones_and_never_auto_accepts_ambiguous(
    harness: SyncHarness, emulator: EmulatorControl
) -> None:
    realm = harness.realm_id
    rnd = random.Random(7)
    names = [(f, last) for f in FIRST for last in LAST]  # 500 distinct people
    ids: dict[tuple[str, str], str] = {}
    for first, last in names:
        body = {"DisplayName": f"{first} {last}", "GivenName": first, "FamilyName": last}
        ids[(first, last)] = emulator.ui(realm, "Customer", "create", body)["Customer"]["Id"]
    # Near-duplicates: the same person entered twice ("Jon Smith" vs "John Smith"), and an e-mail on file.
    jon = {"DisplayName": "Jon Smith", "GivenName": "Jon", "FamilyName": "Smith"}
    dup = emulator.ui(realm, "Customer", "create", jon)["Customer"]
    emulator.ui(
        realm,
        "Customer",
        "create",
        {"DisplayName": "M. Garcia (billing)", "PrimaryEmailAddr": {"Address": "mgarcia@example.org"}},
    )
    assert len(emulator.books(realm)["Customer"]) == 502

    picks = rnd.sample([n for n in names if n != ("John", "Smith")], 6)
    patients = [
        # exact, different case/punctuation, "Last, First" order, a typo, an e-mail-only match, the ambiguous one
        ("p-exact", picks[0][0], picks[0][1], None, ids[picks[0]]),
        ("p-case", picks[1][0].upper(), picks[1][1].lower() + ".", None, ids[picks[1]]),
        ("p-order", picks[2][1], picks[2][0], None, ids[picks[2]]),
        ("p-typo", picks[3][0], picks[3][1][:-1] + "x" + picks[3][1][-1], None, ids[picks[3]]),
        ("p-email", "Maria", "Garcia-Lopez", "MGarcia@example.org", None),
        ("p-ambiguous", "Jon", "Smyth", None, None),
    ]
    harness.store(
        b.patient_upserted(tenant_id=harness.tenant_id, patient_id=pid, first_name=f, last_name=la, email=em)
        for pid, f, la, em, _ in patients
    )
    tokens = EmulatorTokens(emulator)

    def factory(realm_id: str) -> QboApi:
        return QboClient(realm_id, tokens=tokens)

    service = MatchingService(client_factory=factory)
    out = service.suggestions(harness.tenant_id)
    assert out["customers_considered"] == 502
    by_patient = {s["patient_id"]: s for s in out["items"]}
    for pid, _, _, _, expected in patients:
        if expected:
            assert by_patient[pid]["best"]["customer_id"] == expected, (pid, by_patient[pid])
    assert "e-mail exact" in by_patient["p-email"]["best"]["reasons"]
    ambiguous = by_patient["p-ambiguous"]
    assert ambiguous["ambiguous"] is True
    assert {c["customer_id"] for c in ambiguous["candidates"][:2]} == {ids[("John", "Smith")], dup["Id"]}

    result = service.auto_accept("ops-carol", harness.tenant_id, threshold=0.5)
    assert "p-ambiguous" in result["ambiguous"]
    accepted = {a["patient_id"]: a["customer_id"] for a in result["accepted"]}
    assert "p-ambiguous" not in accepted
    assert accepted["p-exact"] == ids[picks[0]] and accepted["p-order"] == ids[picks[2]]
    patient = harness.service.objects.get(harness.tenant_id, "patient:p-exact")
    assert patient is not None and patient.qbo["customer"]["id"] == ids[picks[0]]
    assert harness.service.objects.get(harness.tenant_id, "patient:p-ambiguous").qbo.get("customer") is None  # type: ignore[union-attr]
    # The engine uses the link: no new customer is created for an accepted patient.
    harness.drain()
    assert len(emulator.books(realm)["Customer"]) == 502 + 1  # only p-ambiguous got a new (redacted) customer
