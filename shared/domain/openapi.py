"""The OpenAPI 3.1 document of ``POST /v1/events`` (and ``GET /v1/openapi.json``), built from the pydantic
models that validate requests, so the published contract and the validator cannot drift.

``python -m shared.domain.openapi`` rewrites ``docs/openapi.json`` (a test checks the committed copy).
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared.domain import signing
from shared.domain.event_types import EventType
from shared.domain.events import (
    AppointmentData,
    CreditData,
    EventEnvelope,
    InvoiceData,
    PatientData,
    PaymentData,
    RemittanceData,
    data_model_for,
)
from shared.domain.ingest import MAX_BATCH

REF = "#/components/schemas/{model}"
_DATA_MODELS: tuple[type[BaseModel], ...] = (
    PatientData,
    AppointmentData,
    InvoiceData,
    PaymentData,
    RemittanceData,
    CreditData,
)
# Removal events may carry only the object's id (and a reason); see events.parse_event.
_REMOVALS = {
    EventType.PAYMENT_DELETED: "payment_id",
    EventType.CREDIT_DELETED: "credit_id",
    EventType.INVOICE_VOIDED: "invoice_id",
    EventType.INVOICE_UNFINALIZED: "invoice_id",
    EventType.APPOINTMENT_CANCELLED: "appointment_id",
}

_SIGNING = f"""Every request is signed with the tenant's signing secret (created by `qbsync tenants create`,
rotated by `qbsync tenants rotate-secret`; the current and the previous secret are both accepted).

    {signing.TENANT_HEADER}: <tenant_id>
    {signing.SIGNATURE_HEADER}: t=<unix seconds>,v1=<hex>[,v1=<hex>]
    <hex> = lower-case hex HMAC-SHA256(key = signing secret, message = "<t>." + raw request body bytes)

The timestamp must be within 5 minutes of the server's clock. Several `v1=` values may be sent (e.g.
signed with the old and the new secret during a rotation); one match is enough."""

_DESCRIPTION = f"""Booking-platform events for qbsync. The body is one event or `{{"events": [...]}}` with 1 to
{MAX_BATCH} events. A batch is all-or-nothing: every event is validated before any is stored.

Events are idempotent on `id`: sending the same event again returns the first answer; reusing an id for a
different body is a `409`. `version` orders the changes of one source object (higher wins; older versions
never overwrite newer ones). Fields marked `x-phi` are accepted but dropped before anything is stored and
are never sent to QuickBooks.

{_SIGNING}"""


@lru_cache(maxsize=1)
def build() -> dict[str, Any]:
    """The OpenAPI 3.1 document (cached: models do not change at run time)."""
    _, defs = models_json_schema([(m, "validation") for m in _DATA_MODELS], ref_template=REF)
    schemas: dict[str, Any] = dict(sorted(defs.get("$defs", {}).items()))
    envelope = EventEnvelope.model_json_schema(ref_template=REF)["properties"]
    for name, id_field in sorted({(f"{t.value.split('.')[0].title()}Removal", f) for t, f in _REMOVALS.items()}):
        schemas[name] = {
            "type": "object",
            "description": "A removal may carry only the object's id (and a reason).",
            "required": [id_field],
            "properties": {id_field: {"type": "string"}, "reason": {"type": "string", "maxLength": 200}},
        }
    mapping: dict[str, str] = {}
    for etype in EventType:
        name = "Event_" + etype.value.replace(".", "_")
        data_ref: dict[str, Any] = {"$ref": REF.format(model=data_model_for(etype).__name__)}
        if etype in _REMOVALS:
            removal = f"{etype.value.split('.')[0].title()}Removal"
            data_ref = {"anyOf": [data_ref, {"$ref": REF.format(model=removal)}]}
        schemas[name] = {
            "type": "object",
            "title": etype.value,
            "additionalProperties": False,
            "required": ["id", "type", "tenant_id", "occurred_at", "version", "data"],
            "properties": {
                "id": {**envelope["id"], "description": "Unique per tenant; the idempotency key."},
                "type": {"const": etype.value},
                "tenant_id": {**envelope["tenant_id"], "description": f"Must equal {signing.TENANT_HEADER}."},
                "occurred_at": {**envelope["occurred_at"], "description": "RFC 3339 with an offset."},
                "version": {**envelope["version"], "description": "The source object's version (monotonic)."},
                "data": data_ref,
            },
        }
        mapping[etype.value] = REF.format(model=name)
    schemas["Event"] = {
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "type", "mapping": mapping},
    }
    schemas["EventBatch"] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["events"],
        "properties": {
            "events": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH,
                "items": {"$ref": REF.format(model="Event")},
            }
        },
    }
    schemas["Accepted"] = {
        "type": "object",
        "required": ["status", "event_ids"],
        "properties": {"status": {"const": "accepted"}, "event_ids": {"type": "array", "items": {"type": "string"}}},
    }
    schemas["Error"] = {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "description": "Error class, e.g. BadRequest, Unauthorized, Conflict."},
            "message": {"type": "string"},
            "field": {"type": "string", "description": "The offending field, e.g. events[3].data.lines[0].unit_price"},
            "details": {
                "type": "object",
                "properties": {
                    "problems": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["field", "problem"],
                            "properties": {"field": {"type": "string"}, "problem": {"type": "string"}},
                        },
                    }
                },
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "qbsync booking events", "version": "1.0.0", "description": _DESCRIPTION},
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "paths": {"/v1/events": {"post": _post_events()}, "/v1/openapi.json": {"get": _get_openapi()}},
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "tenant": {"type": "apiKey", "in": "header", "name": signing.TENANT_HEADER},
                "signature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": signing.SIGNATURE_HEADER,
                    "description": _SIGNING,
                },
            },
        },
    }


def json_content(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """A response of ``schema`` as JSON."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error(description: str) -> dict[str, Any]:
    """An error response: the document's ``Error`` schema (every qbsync error body has ``error`` and ``message``)."""
    return json_content({"$ref": REF.format(model="Error")}, description)


def _post_events() -> dict[str, Any]:
    return {
        "operationId": "postEvents",
        "summary": "Send one event or a batch of events",
        "security": [{"tenant": [], "signature": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"oneOf": [{"$ref": REF.format(model="Event")}, {"$ref": REF.format(model="EventBatch")}]}
                }
            },
        },
        "responses": {
            "202": {
                "description": "Stored durably (or already stored with the same body); the sync follows.",
                "content": {"application/json": {"schema": {"$ref": REF.format(model="Accepted")}}},
            },
            "400": error("Malformed JSON or an invalid event; `field` names the first problem."),
            "401": error("Missing tenant or signature header, malformed or stale signature, or no match."),
            "404": error("Unknown tenant."),
            "409": error("An event id was already accepted with a different body."),
            "413": error("The body is larger than the limit (256 KiB by default)."),
            "415": error("Content-Type is not application/json."),
            "422": error("A valid-looking event of an unknown type."),
            "503": error("Storage is busy; retry the same request."),
        },
    }


def _get_openapi() -> dict[str, Any]:
    return {
        "operationId": "getOpenApi",
        "summary": "This document",
        "responses": {
            "200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}
        },
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def write_or_check(path: Path, text: str, module: str, argv: list[str] | None = None) -> int:
    """``python -m <module> [--check]``: write the document, or (``--check``) only say whether it is current."""
    args = sys.argv[1:] if argv is None else argv
    name = path.relative_to(path.parents[1])
    if "--check" in args:
        ok = path.exists() and path.read_text() == text
        print(f"{name} is up to date" if ok else f"{name} is stale: run python -m {module}")
        return 0 if ok else 1
    path.write_text(text)
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return write_or_check(DOC_PATH, render(), "shared.domain.openapi", argv)


if __name__ == "__main__":
    raise SystemExit(main())
