"""A tenant's signed events never touch another tenant's records or QuickBooks company."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from infra.demo.scenario import pt_week
from infra.qbo_emulator.control import EmulatorControl
from tests import builders as b
from tests.security.conftest import Poster, TenantKeys, ledger_size, new_tenant
from tests.sync_harness import SyncHarness, money


def test_an_event_for_another_tenant_inside_a_signed_batch_is_400_naming_it(post: Poster, tenant: TenantKeys) -> None:
    other = new_tenant("Other")
    doc = b.batch(
        b.appointment_completed(tenant_id=tenant.tenant_id),
        b.appointment_completed(tenant_id=other.tenant_id),
        b.appointment_completed(tenant_id=tenant.tenant_id),
    )
    before = ledger_size()
    answer = post(doc)
    assert answer.status == 400
    assert answer.body["field"] == "events[1].tenant_id"
    assert ledger_size() == before


def test_the_same_ids_in_two_tenants_are_two_separate_records(post: Poster, tenant: TenantKeys, webhook: Any) -> None:
    """Keys are namespaced by tenant: B reusing A's event and object ids with other amounts is not a 409 and
    changes nothing of A's."""
    from tests.security.conftest import handler_send, make_poster

    other = new_tenant("Other")
    post_b = make_poster(handler_send(webhook), other)
    ev_a = b.payment_collected(tenant_id=tenant.tenant_id, amount="40.00")
    ev_b = {**ev_a, "tenant_id": other.tenant_id, "data": {**ev_a["data"], "amount": "999.00"}}
    assert post(ev_a).status == 202
    assert post_b(ev_b).status == 202
    from shared.adapters.event_store import events_of_object
    from shared.domain.events import EventEnvelope, parse_event

    key = parse_event(EventEnvelope.model_validate(ev_a)).object_key
    assert [r["data"]["amount"] for r in events_of_object(tenant.tenant_id, key)] == ["40.00"]
    assert [r["data"]["amount"] for r in events_of_object(other.tenant_id, key)] == ["999.00"]


# ---------------------------------------------------------------- two tenants, two realms, one sync engine
@pytest.fixture
def two_clinics(
    emulator: EmulatorControl, moto_aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> tuple[SyncHarness, SyncHarness]:
    from shared.adapters.qbo import pacing
    from shared.config import reset_settings_cache

    emulator.reset()
    monkeypatch.setenv("QBO_BASE_URL", emulator.url)
    monkeypatch.setenv("QBO_TIMEOUT_S", "2")
    reset_settings_cache()
    pacing.reset_pacers()
    out = []
    for name in ("clinic-a", "clinic-b"):
        realm = emulator.create_realm(company_name=name)["realm_id"]
        h = SyncHarness(emulator, realm, tenant_id=b.new_id(name))
        h.setup_company()
        out.append(h)
    return out[0], out[1]


def test_two_tenants_books_hold_only_their_own_documents(two_clinics: tuple[SyncHarness, SyncHarness]) -> None:
    a, b_ = two_clinics
    # Same patient / appointment ids in both tenants (pt_week numbers them alike), different visits.
    sc_a = pt_week(a.tenant_id, appointments=6, patients=3, seed=1)
    sc_b = pt_week(b_.tenant_id, appointments=4, patients=2, seed=2)
    a.store(sc_a.events)
    b_.store(sc_b.events)
    a.drain()
    for h, sc in ((a, sc_a), (b_, sc_b)):
        invoices = h.invoices()
        assert len(invoices) == len(sc.invoiced)
        assert sum((money(i["TotalAmt"]) for i in invoices), Decimal(0)) == sc.total
        customers = h.control.books(h.realm_id).get("Customer", [])
        assert len(customers) == len(
            {e["data"]["patient_id"] for e in sc.events if e["type"] == "appointment.completed"}
        )
    # Every API call made for a realm touched only that realm.
    for h, other in ((a, b_), (b_, a)):
        for req in h.control.requests(h.realm_id):
            assert f"/company/{other.realm_id}/" not in str(req.get("path")), req


def test_ops_api_tenant_views_show_only_that_tenant(moto_aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.config import reset_settings_cache
    from shared.services import ops as ops_service
    from tests.unit.ops_support import OPS_KEY, call, failed_object

    monkeypatch.setenv("OPS_LOCAL_KEY", OPS_KEY)
    reset_settings_cache()
    ops_service.reset_services()
    from functions.ops_api import handler

    failed_object("tenant-a", "appointment:same-id")
    failed_object("tenant-b", "appointment:same-id")
    failed_object("tenant-b", "payment:p-9")

    _, a_view = call(handler, "GET", "/ops/failures", query={"tenant": "tenant-a"})
    assert a_view["total"] == 1 and {i["tenant_id"] for i in a_view["items"]} == {"tenant-a"}
    _, b_view = call(handler, "GET", "/ops/failures", query={"tenant": "tenant-b"})
    assert b_view["total"] == 2 and {i["tenant_id"] for i in b_view["items"]} == {"tenant-b"}
    # The same source id under another tenant is another object: tenant A's detail view never shows B's.
    status, detail = call(handler, "GET", "/ops/failures/tenant-a/appointment:same-id")
    assert status == 200 and detail["tenant_id"] == "tenant-a"
    assert call(handler, "GET", "/ops/failures/tenant-a/payment:p-9")[0] == 404
    ops_service.reset_services()
