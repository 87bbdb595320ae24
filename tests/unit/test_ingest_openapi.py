"""The published contract (docs/openapi.json) is generated from the validating models and matches them."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from shared.domain.event_types import EventType
from shared.domain.openapi import DOC_PATH, build, render
from tests import builders as b


def test_the_committed_document_is_the_generated_one() -> None:
    assert DOC_PATH.read_text() == render(), "run: .venv/bin/python -m shared.domain.openapi"


def test_it_is_openapi_3_1_with_the_events_route_and_every_status() -> None:
    doc = build()
    assert doc["openapi"] == "3.1.0"
    post = doc["paths"]["/v1/events"]["post"]
    assert set(post["responses"]) >= {"202", "400", "401", "404", "409", "413", "415", "422"}
    assert "X-Qbsync-Signature" in json.dumps(doc["components"]["securitySchemes"])
    assert set(doc["components"]["schemas"]["Event"]["discriminator"]["mapping"]) == {t.value for t in EventType}


def test_phi_fields_are_marked_in_the_schema() -> None:
    props = build()["components"]["schemas"]["PatientData"]["properties"]
    assert props["date_of_birth"]["x-phi"] is True


def _validator(name: str) -> jsonschema.Draft202012Validator:
    doc = build()
    registry: Registry[Any] = Registry().with_resource("urn:qbsync", Resource.from_contents(doc, DRAFT202012))
    schema = {"$ref": f"urn:qbsync#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


@pytest.mark.parametrize("build_event", b.ALL_BUILDERS, ids=lambda f: f.__name__)
def test_every_builder_event_validates_against_the_schema(build_event: Any) -> None:
    _validator("Event").validate(build_event())


def test_a_batch_validates_and_an_invalid_event_does_not() -> None:
    _validator("EventBatch").validate(b.batch(b.patient_upserted(), b.payment_collected()))
    with pytest.raises(jsonschema.ValidationError):
        _validator("Event").validate({**b.payment_collected(), "version": -1})
