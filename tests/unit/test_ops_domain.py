"""Failure review rules (pure): kinds, PHI-free payloads, allowed transitions, ages."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.domain import failures as f
from shared.domain.errors import BadRequest


def test_failure_kind_is_decided_by_fields() -> None:
    assert f.failure_kind({"mapping": "services.1", "error": "MissingMapping"}) == "missing_mapping"
    assert f.failure_kind({"error": "RetryableError", "kind": "retryable", "qbo_code": "3001"}) == "retries_exhausted"
    assert f.failure_kind({"error": "PermanentError", "qbo_code": "6140"}) == "qbo_6140"
    assert f.failure_kind({"error": "PhiLeakBlocked"}) == "phi_blocked"
    assert f.failure_kind(None) == "other"


def test_phi_free_drops_names_contacts_and_free_text_recursively() -> None:
    d = {"patient_id": "p", "first_name": "A", "email": "a@b.c", "lines": [{"service_code": "1", "description": "x"}]}
    assert f.phi_free(d) == {"patient_id": "p", "lines": [{"service_code": "1"}]}


def test_transitions() -> None:
    assert f.check_transition("exclude", "failed") == "excluded"
    assert f.check_transition("manual_done", "manual") == "manual_done"
    with pytest.raises(BadRequest):
        f.check_transition("manual_done", "failed")


def test_ages() -> None:
    assert f.parse_age("2d") == timedelta(days=2) and f.parse_age("90") == timedelta(seconds=90)
    with pytest.raises(BadRequest):
        f.parse_age("soon")
