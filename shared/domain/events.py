"""The booking-platform event contract (``POST /v1/events``).

Every event: ``id``, ``type``, ``tenant_id``, ``occurred_at``, ``version`` (the source object's version,
monotonic per object) and ``data``. ``data`` is validated per type. Clinical fields (diagnosis codes,
notes, date of birth, insurance member id, addresses) are accepted so platforms can send their objects
unchanged, but they are dropped before anything is stored (see ``PHI_FIELDS``) and never forwarded.

The JSON Schema published in ``docs/openapi.json`` is generated from these models
(``python -m shared.domain.openapi``), so the contract and the validator cannot drift.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.domain.event_types import EventType, Modality, ObjectKind, PayerType

Money = Annotated[Decimal, Field(max_digits=12, decimal_places=2)]
PositiveMoney = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]
Ident = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@\-]+$")]

# Fields that may arrive inside ``data`` but are PHI: dropped at ingest, never stored or forwarded.
PHI_FIELDS: frozenset[str] = frozenset(
    {
        "diagnosis_codes",
        "clinical_notes",
        "notes",
        "date_of_birth",
        "insurance_member_id",
        "address",
        "ssn",
    }
)


# A data model's validator is built the first time an event of its kind arrives, not at import: a container
# starting cold builds the one or two its first request needs instead of all of them (cold start).
_LAZY = ConfigDict(extra="ignore", frozen=True, defer_build=True)


class _Data(BaseModel):
    # Unknown fields are ignored (platforms add fields over time); they are never stored.
    model_config = _LAZY

    # PHI: accepted, never stored. Declared so the schema documents them.
    diagnosis_codes: list[str] | None = Field(default=None, json_schema_extra={"x-phi": True})
    clinical_notes: str | None = Field(default=None, json_schema_extra={"x-phi": True})
    notes: str | None = Field(default=None, json_schema_extra={"x-phi": True})
    date_of_birth: date | None = Field(default=None, json_schema_extra={"x-phi": True})
    insurance_member_id: str | None = Field(default=None, json_schema_extra={"x-phi": True})
    address: dict[str, Any] | None = Field(default=None, json_schema_extra={"x-phi": True})

    def stored(self) -> dict[str, Any]:
        """The PHI-free form kept in the ledger (JSON-compatible: money as strings)."""
        return self.model_dump(mode="json", exclude=set(PHI_FIELDS), exclude_none=True)


class PatientData(_Data):
    patient_id: Ident
    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    phone: str | None = Field(default=None, max_length=40)
    # Detailed billing: the account (guardian, employer, doctor's office) the patient is billed under.
    billing_account_id: Ident | None = None
    billing_account_name: str | None = Field(default=None, max_length=100)
    # The tenant's naming policy may allow the full name only with explicit consent.
    name_consent: bool = False


class ServiceLine(BaseModel):
    model_config = _LAZY

    service_code: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9.\-]+$")]
    description: str | None = Field(default=None, max_length=200)
    units: Annotated[Decimal, Field(gt=0, max_digits=8, decimal_places=2)] = Decimal(1)
    unit_price: PositiveMoney
    discount_amount: PositiveMoney = Decimal(0)
    taxable: bool = False

    @model_validator(mode="after")
    def _discount_within_amount(self) -> ServiceLine:
        if self.discount_amount > self.units * self.unit_price:
            raise ValueError("discount_amount exceeds the line amount")
        return self


class AppointmentData(_Data):
    appointment_id: Ident
    patient_id: Ident
    provider_id: Ident
    location_id: Ident
    service_date: date
    payer_type: PayerType
    modality: Modality = Modality.IN_PERSON
    lines: list[ServiceLine] = Field(default_factory=list, max_length=100)
    memo: str | None = Field(default=None, max_length=1000)
    # For a no-show with the tenant's fee rule on: the fee charged.
    no_show_fee: PositiveMoney | None = None


class InvoiceLine(ServiceLine):
    service_date: date | None = None
    appointment_id: Ident | None = None
    provider_id: Ident | None = None


class InvoiceData(_Data):
    """A platform invoice, for tenants that bill in batches instead of per completed appointment."""

    invoice_id: Ident
    patient_id: Ident
    invoice_date: date
    due_date: date | None = None
    provider_id: Ident | None = None
    location_id: Ident | None = None
    payer_type: PayerType = PayerType.SELF_PAY
    modality: Modality = Modality.IN_PERSON
    lines: list[InvoiceLine] = Field(min_length=1, max_length=250)
    memo: str | None = Field(default=None, max_length=1000)
    appointment_ids: list[Ident] = Field(default_factory=list, max_length=250)


class Allocation(BaseModel):
    """Where money goes: to one appointment or one invoice."""

    model_config = _LAZY

    appointment_id: Ident | None = None
    invoice_id: Ident | None = None
    amount: PositiveMoney

    @model_validator(mode="after")
    def _exactly_one_target(self) -> Allocation:
        if (self.appointment_id is None) == (self.invoice_id is None):
            raise ValueError("give exactly one of appointment_id or invoice_id")
        return self


class PaymentKind(StrEnum):
    COPAY = "copay"
    PATIENT = "patient"
    INSURANCE = "insurance"


class PaymentData(_Data):
    payment_id: Ident
    patient_id: Ident
    amount: PositiveMoney
    kind: PaymentKind = PaymentKind.PATIENT
    method: str | None = Field(default=None, max_length=40)
    reference: str | None = Field(default=None, max_length=40)
    received_on: date
    deposit_batch_id: Ident | None = None
    applies_to: list[Allocation] = Field(default_factory=list, max_length=100)
    refunded_amount: PositiveMoney = Decimal(0)

    @model_validator(mode="after")
    def _allocations_within_amount(self) -> PaymentData:
        if sum((a.amount for a in self.applies_to), Decimal(0)) > self.amount:
            raise ValueError("applies_to amounts exceed the payment amount")
        return self


class AdjustmentKind(StrEnum):
    CONTRACTUAL = "contractual"
    WRITE_OFF = "write_off"


class Adjustment(BaseModel):
    model_config = _LAZY

    kind: AdjustmentKind
    amount: PositiveMoney
    reason: str | None = Field(default=None, max_length=200)


class RemittanceItem(Allocation):
    patient_id: Ident
    adjustments: list[Adjustment] = Field(default_factory=list, max_length=20)


MAX_REMITTANCE_ITEMS = 100  # claims per remittance event; payers split larger ERAs


class RemittanceData(_Data):
    """An insurer's payment (ERA/EOB) covering one or more visits, with adjustments."""

    remittance_id: Ident
    payer_name: str | None = Field(default=None, max_length=100)
    received_on: date
    reference: str | None = Field(default=None, max_length=40)
    method: str | None = Field(default=None, max_length=40)
    items: list[RemittanceItem] = Field(min_length=1, max_length=MAX_REMITTANCE_ITEMS)


class CreditKind(StrEnum):
    WRITE_OFF = "write_off"
    COURTESY = "courtesy"


class CreditData(_Data):
    credit_id: Ident
    patient_id: Ident
    amount: PositiveMoney
    kind: CreditKind = CreditKind.COURTESY
    reason: str | None = Field(default=None, max_length=200)
    issued_on: date
    applies_to: Allocation | None = None


_DATA_BY_PREFIX: dict[str, tuple[ObjectKind, type[_Data], str]] = {
    "patient": (ObjectKind.PATIENT, PatientData, "patient_id"),
    "appointment": (ObjectKind.APPOINTMENT, AppointmentData, "appointment_id"),
    "invoice": (ObjectKind.INVOICE, InvoiceData, "invoice_id"),
    "payment": (ObjectKind.PAYMENT, PaymentData, "payment_id"),
    "insurance": (ObjectKind.REMITTANCE, RemittanceData, "remittance_id"),
    "credit": (ObjectKind.CREDIT, CreditData, "credit_id"),
}

# Event types whose data may be partial: only the object id is required (the object is being removed).
_ID_ONLY_TYPES = {
    EventType.PAYMENT_DELETED,
    EventType.CREDIT_DELETED,
    EventType.INVOICE_VOIDED,
    EventType.INVOICE_UNFINALIZED,
    EventType.APPOINTMENT_CANCELLED,
}


class EventEnvelope(BaseModel):
    """What the platform sends; ``data`` is validated against its type by ``parse_event``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Ident
    type: str = Field(min_length=1, max_length=64)
    tenant_id: Ident
    occurred_at: datetime
    version: int = Field(ge=0, le=2**53)
    data: dict[str, Any]

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("occurred_at needs a timezone offset (e.g. 2026-01-20T10:00:00Z)")
        try:
            v.astimezone(UTC)  # stored in UTC: 0001-01-01T00:00:00+01:00 has no UTC time
        except OverflowError:
            raise ValueError("occurred_at is out of range once converted to UTC") from None
        return v


class Event(BaseModel):
    """A validated event, ready to store: PHI removed, object identified."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: EventType
    tenant_id: str
    occurred_at: datetime
    version: int
    object_kind: ObjectKind
    object_id: str
    data: dict[str, Any]  # PHI-free, JSON-compatible
    phi_dropped: list[str] = Field(default_factory=list)

    @property
    def object_key(self) -> str:
        return f"{self.object_kind.value}:{self.object_id}"


class UnknownEventType(ValueError):
    """The envelope is valid but its ``type`` is not one qbsync knows (HTTP 422)."""


def parse_event(envelope: EventEnvelope) -> Event:
    """Validate ``data`` for the envelope's type and strip PHI.

    Raises UnknownEventType for an unknown type, pydantic.ValidationError for bad data.
    """
    try:
        etype = EventType(envelope.type)
    except ValueError as exc:
        raise UnknownEventType(envelope.type) from exc
    kind, model, id_field = _DATA_BY_PREFIX[etype.value.split(".", 1)[0]]
    if etype in _ID_ONLY_TYPES and set(envelope.data) <= {id_field, *PHI_FIELDS, "reason"}:
        # A removal needs only the object id; validate it with the id pattern.
        object_id = _IdOnly.model_validate({"object_id": envelope.data.get(id_field)}).object_id
        stored: dict[str, Any] = {id_field: object_id}
        if isinstance(envelope.data.get("reason"), str):
            stored["reason"] = envelope.data["reason"][:200]
    else:
        data = model.model_validate(envelope.data)
        object_id = getattr(data, id_field)
        stored = data.stored()
    dropped = sorted(k for k in envelope.data if k in PHI_FIELDS)
    return Event(
        id=envelope.id,
        type=etype,
        tenant_id=envelope.tenant_id,
        occurred_at=envelope.occurred_at,
        version=envelope.version,
        object_kind=kind,
        object_id=object_id,
        data=stored,
        phi_dropped=dropped,
    )


class _IdOnly(BaseModel):
    model_config = ConfigDict(defer_build=True)

    object_id: Ident


def data_model_for(event_type: EventType) -> type[_Data]:
    return _DATA_BY_PREFIX[event_type.value.split(".", 1)[0]][1]
