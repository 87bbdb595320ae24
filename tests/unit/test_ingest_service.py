"""shared.domain.ingest with in-memory fakes: ordering of checks, validation, idempotent storage."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from shared.domain.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    RetryableError,
    Unauthorized,
    UnprocessableEvent,
    UnsupportedMediaType,
)
from shared.domain.ingest import IngestRequest, IngestService, StorageUnavailable, StoredEvent, canonical_sha256
from tests import builders as b

NOW = 1_800_000_000
TENANT = "clinic-1"


class Keys:
    def __init__(self, secrets: dict[str, list[str]]) -> None:
        self.secrets = secrets
        self.fresh_calls = 0
        self.stale: dict[str, list[str]] = {}

    def secrets_for(self, tenant_id: str, *, fresh: bool = False) -> Sequence[str] | None:
        if fresh:
            self.fresh_calls += 1
            return self.secrets.get(tenant_id)
        return self.stale.get(tenant_id, self.secrets.get(tenant_id))


class Memory:
    """All-or-nothing writer with the EventWriter contract."""

    def __init__(self) -> None:
        self.items: dict[str, StoredEvent] = {}
        self.calls = 0
        self.fail_times = 0

    def insert_all(self, events: Sequence[StoredEvent]) -> dict[str, str]:
        self.calls += 1
        if self.fail_times:
            self.fail_times -= 1
            raise RetryableError("throttled")
        existing = {e.event.id: self.items[e.event.id].body_sha256 for e in events if e.event.id in self.items}
        if existing:
            return existing
        self.items.update({e.event.id: e for e in events})
        return {}


@pytest.fixture
def keys() -> Keys:
    return Keys({TENANT: ["s3cret"]})


@pytest.fixture
def store() -> Memory:
    return Memory()


@pytest.fixture
def service(keys: Keys, store: Memory) -> IngestService:
    return IngestService(keys, store, max_body_bytes=10_000, tolerance_s=300, clock=lambda: NOW)


def request(doc: object, *, secret: str = "s3cret", tenant: str = TENANT, **headers: str) -> IngestRequest:
    body = doc if isinstance(doc, bytes) else b.to_body(doc)
    hdrs = b.signed_headers(body, tenant, secret, ts=NOW)
    hdrs.update(headers)
    return IngestRequest.of(hdrs, body)


def test_an_event_is_stored_phi_free_and_answered(service: IngestService, store: Memory) -> None:
    ev = b.patient_upserted(tenant_id=TENANT, **b.PHI_SAMPLE)
    answer = service.ingest(request(ev))
    assert answer.body() == {"status": "accepted", "event_ids": [ev["id"]]}
    stored = store.items[ev["id"]].event
    assert "date_of_birth" not in stored.data and stored.phi_dropped == sorted(b.PHI_SAMPLE)


def test_size_is_checked_before_content_type_and_auth(service: IngestService) -> None:
    with pytest.raises(PayloadTooLarge):
        service.ingest(IngestRequest.of({"content-type": "text/plain"}, b"x" * 10_001))


def test_content_type_is_checked_before_auth(service: IngestService) -> None:
    with pytest.raises(UnsupportedMediaType):
        service.ingest(IngestRequest.of({"Content-Type": "application/jsonp"}, b"{}"))


@pytest.mark.parametrize(
    "ctype", ["application/json", "Application/JSON; charset=utf-8", 'application/json;charset="UTF-8"']
)
def test_json_content_types_pass(service: IngestService, ctype: str) -> None:
    service.ingest(request(b.patient_upserted(tenant_id=TENANT), **{"Content-Type": ctype}))


def test_latin1_charset_is_415(service: IngestService) -> None:
    with pytest.raises(UnsupportedMediaType):
        service.ingest(
            request(b.patient_upserted(tenant_id=TENANT), **{"Content-Type": "application/json; charset=latin-1"})
        )


def test_unknown_tenant_is_404(service: IngestService) -> None:
    with pytest.raises(NotFound):
        service.ingest(request(b.patient_upserted(tenant_id="ghost"), tenant="ghost"))


def test_a_just_rotated_secret_works_although_the_cache_is_stale(service: IngestService, keys: Keys) -> None:
    keys.stale[TENANT] = ["old"]
    keys.secrets[TENANT] = ["new", "old"]
    service.ingest(request(b.patient_upserted(tenant_id=TENANT), secret="new"))
    assert keys.fresh_calls == 1


def test_a_bad_signature_asks_for_fresh_secrets_once_then_fails(service: IngestService, keys: Keys) -> None:
    with pytest.raises(Unauthorized):
        service.ingest(request(b.patient_upserted(tenant_id=TENANT), secret="wrong"))
    assert keys.fresh_calls == 1


def test_a_stale_timestamp_fails_before_any_key_lookup(service: IngestService, keys: Keys) -> None:
    body = b.to_body(b.patient_upserted(tenant_id=TENANT))
    req = IngestRequest.of(b.signed_headers(body, "ghost", "s3cret", ts=NOW - 600), body)
    with pytest.raises(Unauthorized):
        service.ingest(req)
    assert keys.fresh_calls == 0


@pytest.mark.parametrize("raw", [b"NaN", b'{"a": Infinity}', b"\xff\xfe{", b"[" * 5000 + b"]" * 5000])
def test_non_json_is_400(service: IngestService, raw: bytes) -> None:
    with pytest.raises(BadRequest):
        service.ingest(request(raw))


def test_all_problems_of_a_batch_are_listed(service: IngestService, store: Memory) -> None:
    events = [
        b.payment_collected(tenant_id=TENANT, amount="x"),
        b.patient_upserted(tenant_id=TENANT, email="not-an-email"),
        "not an event",
    ]
    with pytest.raises(BadRequest) as err:
        service.ingest(request(b.batch(*events)))
    fields = [p["field"] for p in err.value.details["problems"]]
    assert fields == ["events[0].data.amount", "events[1].data.email", "events[2]"]
    assert store.calls == 0


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_time_with_no_utc_equivalent_is_a_400_naming_occurred_at(
    service: IngestService, store: Memory, when: str
) -> None:
    """Found by the schemathesis run: the stored event's time is UTC, and these have none (it was a 500)."""
    with pytest.raises(BadRequest) as err:
        service.ingest(request(b.payment_collected(tenant_id=TENANT, occurred_at=when)))
    assert err.value.field == "occurred_at"
    assert "out of range once converted to UTC" in err.value.details["problems"][0]["problem"]
    assert store.calls == 0


def test_a_removal_without_its_id_names_the_id_field(service: IngestService) -> None:
    with pytest.raises(BadRequest) as err:
        service.ingest(request(b.payment_deleted(tenant_id=TENANT, payment_id=None)))
    assert err.value.field == "data.payment_id"


def test_bad_data_wins_over_unknown_type(service: IngestService) -> None:
    events = [b.event("x.y", {}, tenant_id=TENANT), b.payment_collected(tenant_id=TENANT, amount="x")]
    with pytest.raises(BadRequest):
        service.ingest(request(b.batch(*events)))


def test_unknown_type_lists_the_known_ones(service: IngestService) -> None:
    with pytest.raises(UnprocessableEvent) as err:
        service.ingest(request(b.event("x.y", {}, tenant_id=TENANT)))
    assert "payment.collected" in err.value.details["known_types"]


def test_a_money_amount_keeps_its_exact_decimal(service: IngestService, store: Memory) -> None:
    body = b.to_body(b.payment_collected(tenant_id=TENANT)).replace(b'"40.00"', b"0.1")
    ev_id = json.loads(body)["id"]
    service.ingest(request(body))
    assert store.items[ev_id].event.data["amount"] == "0.1"


def test_a_concurrent_writer_adding_an_identical_event_is_a_repeat(service: IngestService, store: Memory) -> None:
    a, c = b.payment_collected(tenant_id=TENANT), b.credit_issued(tenant_id=TENANT)
    service.ingest(request(a))
    answer = service.ingest(request(b.batch(a, c)))
    assert answer.event_ids == (a["id"], c["id"]) and answer.duplicates == 1
    assert store.calls == 3  # first write, conflict found, write of the new one


def test_storage_that_stays_busy_is_503(service: IngestService, store: Memory) -> None:
    store.fail_times = 10
    with pytest.raises(StorageUnavailable) as err:
        service.ingest(request(b.patient_upserted(tenant_id=TENANT)))
    assert err.value.status == 503


def test_a_reused_id_with_other_content_is_a_conflict(service: IngestService) -> None:
    ev = b.payment_collected(tenant_id=TENANT)
    service.ingest(request(ev))
    with pytest.raises(Conflict) as err:
        service.ingest(request({**ev, "version": 7}))
    assert err.value.field == "id"


def test_the_hash_ignores_key_order_and_offset_notation(service: IngestService, store: Memory) -> None:
    ev = b.patient_upserted(tenant_id=TENANT, occurred_at="2026-01-20T10:00:00Z")
    service.ingest(request(ev))
    first = store.items[ev["id"]].body_sha256
    same = dict(reversed(list({**ev, "occurred_at": "2026-01-20T05:00:00-05:00"}.items())))
    assert canonical_sha256(service_event(same)) == first


def service_event(doc: dict[str, object]):  # type: ignore[no-untyped-def]
    from shared.domain.events import EventEnvelope, parse_event

    return parse_event(EventEnvelope.model_validate(doc))
