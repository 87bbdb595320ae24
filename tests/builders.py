"""Builders for booking-platform events, signed requests and API Gateway events.

Every builder returns a plain JSON-compatible dict with sensible defaults and unique ids; pass keyword
arguments to override envelope fields (``event_id``, ``tenant_id``, ``version``, ``occurred_at``) or
``data`` fields (anything else). Money is given as strings, the way platforms usually send it.

    ev = payment_collected(tenant_id="clinic-1", amount="40.00", applies_to=[{"appointment_id": appt, ...}])
    body = to_body(batch(ev1, ev2))
    headers = signed_headers(body, "clinic-1", secret)
    api_gateway_event("POST", "/v1/events", body, headers)
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.domain import signing

DEFAULT_TENANT = "clinic-1"
_seq = itertools.count(1)
_ENVELOPE_KEYS = ("event_id", "tenant_id", "version", "occurred_at")


def new_id(prefix: str) -> str:
    """A unique, readable id such as ``pay-3-1a2b3c4d``."""
    return f"{prefix}-{next(_seq)}-{uuid.uuid4().hex[:8]}"


def iso(dt: datetime | None = None) -> str:
    return (dt or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")


def event(event_type: str, data: dict[str, Any], **envelope: Any) -> dict[str, Any]:
    """Any event (use the typed builders below when there is one)."""
    return {
        "id": envelope.get("event_id") or new_id("evt"),
        "type": event_type,
        "tenant_id": envelope.get("tenant_id", DEFAULT_TENANT),
        "occurred_at": envelope.get("occurred_at") or iso(),
        "version": envelope.get("version", 1),
        "data": data,
    }


def _build(event_type: str, defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    env = {k: overrides.pop(k) for k in _ENVELOPE_KEYS if k in overrides}
    return event(event_type, {**defaults, **overrides}, **env)


def line(service_code: str = "97110", unit_price: str = "120.00", units: str = "1", **extra: Any) -> dict[str, Any]:
    return {"service_code": service_code, "unit_price": unit_price, "units": units, **extra}


def today() -> str:
    return date.today().isoformat()


# ---------------------------------------------------------------- patients
def patient_upserted(**kw: Any) -> dict[str, Any]:
    return _build(
        "patient.upserted",
        {"patient_id": new_id("pat"), "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"},
        kw,
    )


# ---------------------------------------------------------------- appointments
def _appointment(**kw: Any) -> dict[str, Any]:
    return {
        "appointment_id": new_id("appt"),
        "patient_id": new_id("pat"),
        "provider_id": "prov-1",
        "location_id": "loc-1",
        "service_date": today(),
        "payer_type": "self_pay",
        "modality": "in_person",
        "lines": [line()],
        **kw,
    }


def appointment_booked(**kw: Any) -> dict[str, Any]:
    return _build("appointment.booked", _appointment(), kw)


def appointment_rescheduled(**kw: Any) -> dict[str, Any]:
    return _build("appointment.rescheduled", _appointment(), kw)


def appointment_completed(**kw: Any) -> dict[str, Any]:
    return _build("appointment.completed", _appointment(), kw)


def appointment_no_show(**kw: Any) -> dict[str, Any]:
    return _build("appointment.no_show", _appointment(no_show_fee="50.00"), kw)


def appointment_cancelled(**kw: Any) -> dict[str, Any]:
    return _build("appointment.cancelled", {"appointment_id": new_id("appt")}, kw)


# ---------------------------------------------------------------- invoices
def invoice_finalized(**kw: Any) -> dict[str, Any]:
    defaults = {
        "invoice_id": new_id("inv"),
        "patient_id": new_id("pat"),
        "invoice_date": today(),
        "lines": [line(service_date=today())],
    }
    return _build("invoice.finalized", defaults, kw)


def invoice_voided(**kw: Any) -> dict[str, Any]:
    return _build("invoice.voided", {"invoice_id": new_id("inv")}, kw)


def invoice_unfinalized(**kw: Any) -> dict[str, Any]:
    return _build("invoice.unfinalized", {"invoice_id": new_id("inv")}, kw)


# ---------------------------------------------------------------- payments
def _payment(**kw: Any) -> dict[str, Any]:
    return {
        "payment_id": new_id("pay"),
        "patient_id": new_id("pat"),
        "amount": "40.00",
        "kind": "copay",
        "method": "card",
        "received_on": today(),
        **kw,
    }


def payment_collected(**kw: Any) -> dict[str, Any]:
    return _build("payment.collected", _payment(), kw)


def payment_updated(**kw: Any) -> dict[str, Any]:
    return _build("payment.updated", _payment(), kw)


def payment_refunded(**kw: Any) -> dict[str, Any]:
    return _build("payment.refunded", _payment(refunded_amount="40.00"), kw)


def payment_deleted(**kw: Any) -> dict[str, Any]:
    return _build("payment.deleted", {"payment_id": new_id("pay")}, kw)


# ---------------------------------------------------------------- insurance
def insurance_remittance(**kw: Any) -> dict[str, Any]:
    defaults = {
        "remittance_id": new_id("era"),
        "payer_name": "Acme Health",
        "received_on": today(),
        "items": [
            {
                "appointment_id": new_id("appt"),
                "patient_id": new_id("pat"),
                "amount": "80.00",
                "adjustments": [{"kind": "contractual", "amount": "20.00"}],
            }
        ],
    }
    return _build("insurance.remittance", defaults, kw)


# ---------------------------------------------------------------- credits
def _credit(**kw: Any) -> dict[str, Any]:
    return {
        "credit_id": new_id("cr"),
        "patient_id": new_id("pat"),
        "amount": "15.00",
        "kind": "courtesy",
        "issued_on": today(),
        **kw,
    }


def credit_issued(**kw: Any) -> dict[str, Any]:
    return _build("credit.issued", _credit(), kw)


def credit_updated(**kw: Any) -> dict[str, Any]:
    return _build("credit.updated", _credit(), kw)


def credit_deleted(**kw: Any) -> dict[str, Any]:
    return _build("credit.deleted", {"credit_id": new_id("cr")}, kw)


ALL_BUILDERS = (
    patient_upserted,
    appointment_booked,
    appointment_rescheduled,
    appointment_completed,
    appointment_cancelled,
    appointment_no_show,
    invoice_finalized,
    invoice_voided,
    invoice_unfinalized,
    payment_collected,
    payment_updated,
    payment_refunded,
    payment_deleted,
    insurance_remittance,
    credit_issued,
    credit_updated,
    credit_deleted,
)

PHI_SAMPLE = {
    "date_of_birth": "1815-12-10",
    "diagnosis_codes": ["M54.5"],
    "clinical_notes": "lower back pain, improving",
    "notes": "prefers mornings",
    "insurance_member_id": "XJH123456789",
    "address": {"line1": "12 St James's Square", "city": "London"},
}


# ---------------------------------------------------------------- requests
def batch(*events: dict[str, Any]) -> dict[str, Any]:
    return {"events": list(events)}


def to_body(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def sign(body: bytes, secret: str | list[str], ts: int | None = None) -> str:
    """The ``X-Qbsync-Signature`` header value (one ``v1=`` per secret)."""
    return signing.sign(body, secret, int(time.time()) if ts is None else ts)


def signed_headers(
    body: bytes, tenant_id: str, secret: str | list[str], *, ts: int | None = None, **extra: str
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        signing.TENANT_HEADER: tenant_id,
        signing.SIGNATURE_HEADER: sign(body, secret, ts),
        **extra,
    }


def stale_ts(seconds: int = 301) -> int:
    return int((datetime.now(UTC) - timedelta(seconds=seconds)).timestamp())


def api_gateway_event(
    method: str, path: str, body: bytes | str | None = None, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """A REST API (v1) proxy event as API Gateway sends it to the function."""
    text = body.decode() if isinstance(body, bytes) else body
    hdrs = dict(headers or {})
    return {
        "resource": path,
        "path": path,
        "httpMethod": method.upper(),
        "headers": hdrs,
        "multiValueHeaders": {k: [v] for k, v in hdrs.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path,
            "httpMethod": method.upper(),
            "path": f"/v1{path}",
            "stage": "v1",
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": text,
        "isBase64Encoded": False,
    }


class LambdaContext:
    """The attributes of a Lambda context that Powertools reads."""

    function_name = "BookingWebhookFunction"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:BookingWebhookFunction"
    memory_limit_in_mb = 256
    log_group_name = "/aws/lambda/BookingWebhookFunction"
    log_stream_name = "local"

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


def lambda_context() -> LambdaContext:
    return LambdaContext()


def tenant_row(
    tenant_id: str,
    realm_id: str | None,
    *,
    settings: dict[str, Any] | None = None,
    mappings: dict[str, Any] | None = None,
    **fields: Any,
) -> None:
    """Save a tenant's ledger row directly (what onboarding writes), indexed under its realm."""
    from shared.adapters.dynamo import TenantItem

    index = {"gsi1pk": f"REALM#{realm_id}", "gsi1sk": f"TENANT#{tenant_id}"} if realm_id else {}
    TenantItem(
        f"TENANT#{tenant_id}",
        "TENANT",
        rtype="tenant",
        tenant_id=tenant_id,
        name=fields.pop("name", "Clinic"),
        realm_id=realm_id,
        signing_secret_id="unused",
        settings=settings or {},
        mappings=mappings or {},
        created_at=datetime.now(UTC).isoformat(),
        **index,
        **fields,
    ).save()


def event_row(tenant_id: str, n: int, version: int = 1, *, event_type: str = "appointment.completed") -> Any:
    """A stored appointment event for object ``appointment:a{n}`` (id ``e{n}-{version}``), not yet saved."""
    from shared.adapters.dynamo import EventItem

    return EventItem(
        f"EVT#{tenant_id}#e{n}-{version}",
        "EVT",
        rtype="event",
        tenant_id=tenant_id,
        event_id=f"e{n}-{version}",
        type=event_type,
        object_key=f"appointment:a{n}",
        version=version,
        occurred_at="2026-11-01T00:00:00+00:00",
        received_at="2026-11-01T00:00:00+00:00",
        body_sha256="0" * 64,
        data={"appointment_id": f"a{n}", "v": version},
    )
