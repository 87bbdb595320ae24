"""The reduced demo through HTTP on the local system: books in (emulated) QuickBooks, to the cent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import pytest

from infra.demo.company import LOCATIONS, PROVIDERS
from infra.demo.run import run_scenario
from infra.demo.scenario import pt_week
from infra.local.system import LocalSystem

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def system() -> Iterator[LocalSystem]:
    with LocalSystem(schedules_enabled=False) as s:
        yield s


def test_reduced_week_lands_in_quickbooks_to_the_cent(system: LocalSystem) -> None:
    sc = pt_week("e2e-clinic", appointments=30, patients=8, seed=21, cancel_rate=0.1)
    result = run_scenario(system, sc, tenant_id="e2e-clinic", company_name="E2E PT", dup_rate=0.2)

    assert result.ok, result.unaccounted[:5]
    assert result.duplicates_sent > 0
    books = result.books_synced  # as qbsync left them, before the bookkeeper's edits below
    assert books["invoices"] == len(sc.invoiced)
    assert Decimal(books["invoiced_total"]) == sc.total
    assert {k: Decimal(v) for k, v in books["revenue"]["provider"].items()} == {
        PROVIDERS[p]: v for p, v in sc.by_provider.items()
    }
    assert {k: Decimal(v) for k, v in books["revenue"]["location"].items()} == {
        LOCATIONS[loc]: v for loc, v in sc.by_location.items()
    }
    # No duplicates: one invoice per DocNumber, one customer per DisplayName.
    qbo = system.control.books(result.realm_id)
    assert len({i["DocNumber"] for i in qbo["Invoice"]}) == len(qbo["Invoice"])
    assert len({c["DisplayName"] for c in qbo["Customer"]}) == len(qbo["Customer"])
    # Cancelled visits are skipped with the rule named, never invoiced.
    cancelled = [e["data"]["appointment_id"] for e in sc.events if e["type"] == "appointment.cancelled"]
    assert cancelled and result.reasons.get("skipped: appointment cancelled") == len(cancelled)
    # A bookkeeper's edit and delete in QuickBooks reach the platform as signed callbacks, once each.
    assert set(result.qbo_side_changes) == {"edited", "deleted"}
    assert result.callbacks == {"invoice.updated_in_qbo": 1, "invoice.deleted_in_qbo": 1}
    # PHI never reached QuickBooks.
    sent = json.dumps(system.control.requests(result.realm_id))
    for p in sc.patients.values():
        for field in ("first_name", "last_name", "email", "insurance_member_id", "date_of_birth"):
            assert p[field] not in sent
