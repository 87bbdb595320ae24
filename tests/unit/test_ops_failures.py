"""The ops API's failure review through the real handler (in-process moto): list, show, retry, exclude,
manual entry, audit, and the local-key check."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.adapters.dynamo import ObjectItem
from tests.unit.ops_support import OPS_KEY, call, failed_object


@pytest.fixture
def ops(moto_aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("OPS_LOCAL_KEY", OPS_KEY)
    from shared.config import reset_settings_cache
    from shared.services import ops as ops_service

    reset_settings_cache()
    ops_service.reset_services()
    from functions.ops_api import handler

    yield handler
    ops_service.reset_services()


def _obj(tenant: str, key: str) -> ObjectItem:
    return ObjectItem.get(f"OBJ#{tenant}#{key}", "OBJ", consistent_read=True)


def test_requests_without_the_local_key_are_refused(ops: Any) -> None:
    status, body = call(ops, "GET", "/ops/failures", key=None)
    assert status == 401 and "Ops-Key" in body["message"]
    assert call(ops, "GET", "/ops/failures", key="wrong")[0] == 401


def test_list_filters_and_counts_failures_by_kind(ops: Any) -> None:
    failed_object("t1", "appointment:a1")
    failed_object(
        "t1",
        "invoice:i1",
        error={"kind": "permanent", "error": "PermanentError", "message": "dup", "qbo_code": "6140"},
    )
    old = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    failed_object("t2", "appointment:a2", updated_at=old)

    status, body = call(ops, "GET", "/ops/failures")
    assert status == 200 and body["total"] == 3
    assert body["counts"] == {"missing_mapping": 2, "qbo_6140": 1}
    first = next(i for i in body["items"] if i["object_key"] == "appointment:a1")
    assert first["suggested_fix"].startswith("qbsync mappings set services 97999")

    assert call(ops, "GET", "/ops/failures", query={"tenant": "t1"})[1]["total"] == 2
    assert call(ops, "GET", "/ops/failures", query={"kind": "qbo_6140"})[1]["items"][0]["object_key"] == "invoice:i1"
    assert call(ops, "GET", "/ops/failures", query={"object_kind": "invoice"})[1]["total"] == 1
    aged = call(ops, "GET", "/ops/failures", query={"older_than": "2d"})[1]
    assert [i["object_key"] for i in aged["items"]] == ["appointment:a2"]
    assert call(ops, "GET", "/ops/failures", query={"older_than": "soon"})[0] == 400


def test_show_gives_timeline_fault_and_a_phi_free_payload(ops: Any) -> None:
    failed_object(
        "t1",
        "appointment:a1",
        desired={"appointment_id": "a1", "patient_id": "p1", "first_name": "Ada", "email": "ada@x.org", "lines": []},
        error={
            "kind": "permanent",
            "error": "PermanentError",
            "message": "Business Validation Error",
            "qbo_code": "6000",
            "qbo_detail": "amount mismatch",
            "intuit_tid": "tid-123",
            "suggested_fix": "check amounts",
            "attempts": 1,
        },
    )
    status, body = call(ops, "GET", "/ops/failures/t1/appointment:a1")
    assert status == 200
    assert body["error"]["qbo_code"] == "6000" and body["error"]["intuit_tid"] == "tid-123"
    assert body["error"]["qbo_detail"] == "amount mismatch" and body["suggested_fix"] == "check amounts"
    assert [e["event_id"] for e in body["timeline"]] == ["evt-appointment:a1"]
    assert body["payload"] == {"appointment_id": "a1", "patient_id": "p1", "lines": []}
    assert call(ops, "GET", "/ops/failures/t1/appointment:nope")[0] == 404


def test_retry_marks_dirty_with_a_fresh_attempt_budget_and_is_audited(ops: Any) -> None:
    failed_object("t1", "appointment:a1", attempts=8)
    status, body = call(ops, "POST", "/ops/failures/retry", {"tenant_id": "t1", "object_keys": ["appointment:a1"]})
    assert status == 200 and body == {"retried": ["appointment:a1"], "errors": {}}
    item = _obj("t1", "appointment:a1")
    assert item.dirty is True and item.attempts == 0
    audit = call(ops, "GET", "/ops/audit", query={"tenant": "t1"})[1]["items"]
    assert audit[0]["actor"] == "alice" and audit[0]["action"] == "retry" and audit[0]["target"] == "appointment:a1"


def test_retry_all_by_kind(ops: Any) -> None:
    failed_object("t1", "appointment:a1")
    failed_object("t1", "invoice:i1", error={"kind": "permanent", "error": "PermanentError", "message": "x"})
    body = call(ops, "POST", "/ops/failures/retry", {"tenant_id": "t1", "all": True, "kind": "missing_mapping"})[1]
    assert body["retried"] == ["appointment:a1"]
    assert call(ops, "POST", "/ops/failures/retry", {"tenant_id": "t1"})[0] == 400


def test_exclude_and_manual_entry_leave_the_failure_list_and_fill_the_todo_list(ops: Any) -> None:
    for k in ("appointment:a1", "appointment:a2", "appointment:a3"):
        failed_object("t1", k)
    assert call(ops, "POST", "/ops/failures/exclude", {"tenant_id": "t1", "object_keys": ["appointment:a1"]})[0] == 400
    body = call(
        ops, "POST", "/ops/failures/exclude", {"tenant_id": "t1", "object_keys": ["appointment:a1"], "reason": "test"}
    )[1]
    assert body["exclude"] == ["appointment:a1"]
    body = call(ops, "POST", "/ops/failures/manual", {"tenant_id": "t1", "object_keys": ["appointment:a2"]})[1]
    assert body["manual"] == ["appointment:a2"]

    listed = call(ops, "GET", "/ops/failures", query={"tenant": "t1"})[1]
    assert [i["object_key"] for i in listed["items"]] == ["appointment:a3"]
    todo = call(ops, "GET", "/ops/manual", query={"tenant": "t1"})[1]
    assert [i["object_key"] for i in todo["items"]] == ["appointment:a2"]
    assert _obj("t1", "appointment:a1").status == "excluded"

    done = call(ops, "POST", "/ops/failures/manual-done", {"tenant_id": "t1", "object_keys": ["appointment:a2"]})[1]
    assert done["manual_done"] == ["appointment:a2"]
    assert call(ops, "GET", "/ops/manual", query={"tenant": "t1"})[1]["total"] == 0
    assert _obj("t1", "appointment:a2").status == "manual_done"
    # done twice: refused, named
    again = call(ops, "POST", "/ops/failures/manual-done", {"tenant_id": "t1", "object_keys": ["appointment:a2"]})[1]
    assert "manual_done" in again["errors"]["appointment:a2"]
    actions = [a["action"] for a in call(ops, "GET", "/ops/audit", query={"tenant": "t1"})[1]["items"]]
    assert actions == ["manual_done", "manual", "exclude"]


def test_unknown_route_and_bad_body(ops: Any) -> None:
    assert call(ops, "GET", "/ops/nothing")[0] == 404
    status, _ = call(ops, "POST", "/ops/failures/retry", ["not", "an", "object"])
    assert status == 400
