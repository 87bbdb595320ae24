"""The booking-platform event vocabulary: event types, source object kinds, payer types, modalities and the
lifecycle each event type leaves its object in.

Kept apart from ``shared.domain.events`` (the pydantic models that validate events at ingest) so the workers
that only need the names do not build those models at import time.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class EventType(StrEnum):
    PATIENT_UPSERTED = "patient.upserted"
    APPOINTMENT_BOOKED = "appointment.booked"
    APPOINTMENT_RESCHEDULED = "appointment.rescheduled"
    APPOINTMENT_COMPLETED = "appointment.completed"
    APPOINTMENT_CANCELLED = "appointment.cancelled"
    APPOINTMENT_NO_SHOW = "appointment.no_show"
    INVOICE_FINALIZED = "invoice.finalized"
    INVOICE_VOIDED = "invoice.voided"
    INVOICE_UNFINALIZED = "invoice.unfinalized"
    PAYMENT_COLLECTED = "payment.collected"
    PAYMENT_UPDATED = "payment.updated"
    PAYMENT_REFUNDED = "payment.refunded"
    PAYMENT_DELETED = "payment.deleted"
    INSURANCE_REMITTANCE = "insurance.remittance"
    CREDIT_ISSUED = "credit.issued"
    CREDIT_UPDATED = "credit.updated"
    CREDIT_DELETED = "credit.deleted"


class ObjectKind(StrEnum):
    """Source objects whose desired QBO state the ledger tracks."""

    PATIENT = "patient"
    APPOINTMENT = "appointment"
    INVOICE = "invoice"
    PAYMENT = "payment"
    REMITTANCE = "remittance"
    CREDIT = "credit"


class PayerType(StrEnum):
    INSURANCE = "insurance"
    SELF_PAY = "self_pay"


class Modality(StrEnum):
    IN_PERSON = "in_person"
    TELEHEALTH = "telehealth"


Lifecycle = Literal["active", "cancelled", "no_show", "voided", "deleted", "draft"]


def lifecycle_for(event_type: EventType) -> Lifecycle:
    """The state a source object is in after an event of this type."""
    table: dict[EventType, Lifecycle] = {
        EventType.APPOINTMENT_BOOKED: "draft",
        EventType.APPOINTMENT_RESCHEDULED: "draft",
        EventType.APPOINTMENT_COMPLETED: "active",
        EventType.APPOINTMENT_CANCELLED: "cancelled",
        EventType.APPOINTMENT_NO_SHOW: "no_show",
        EventType.INVOICE_FINALIZED: "active",
        EventType.INVOICE_VOIDED: "voided",
        EventType.INVOICE_UNFINALIZED: "deleted",
        EventType.PAYMENT_DELETED: "deleted",
        EventType.CREDIT_DELETED: "deleted",
    }
    return table.get(event_type, "active")
