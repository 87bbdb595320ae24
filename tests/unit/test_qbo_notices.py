"""intuit-signature verification and webhook parsing against Intuit's published samples and SDK test vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.domain import qbo_notices as qn
from shared.domain.errors import BadRequest, Unauthorized

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "qbo_samples"
LEGACY = (SAMPLES / "webhook-legacy-dotnet-sdk-test.json").read_bytes()
DOTNET_TOKEN = "00faeec4-08d0-4996-bb37-698ae19f0149"
DOTNET_SIGNATURE = "6q+xGyMirJupwKTh2/WBl2NcdxzxqdIbk3sneKTxLWM="


def test_dotnet_sdk_vector_verifies() -> None:
    assert qn.intuit_signature(LEGACY, DOTNET_TOKEN) == DOTNET_SIGNATURE
    qn.verify_signature(LEGACY, DOTNET_SIGNATURE, [DOTNET_TOKEN])


def test_python_quickbooks_vector_verifies() -> None:
    qn.verify_signature(b'{"stuff":"5"}', "nfPLN16u3vMvv08ghDs+dOkLuirEVDy5wAeG/lmM2OA=", ["verify_me"])


@pytest.mark.parametrize(
    ("body", "header", "tokens"),
    [
        (LEGACY.replace(b'"40"', b'"41"'), DOTNET_SIGNATURE, [DOTNET_TOKEN]),  # tampered body
        (LEGACY, DOTNET_SIGNATURE, ["not-the-token"]),  # wrong key
        (LEGACY, None, [DOTNET_TOKEN]),  # missing header
        (LEGACY, "", [DOTNET_TOKEN]),  # empty header
        (LEGACY, DOTNET_SIGNATURE, []),  # no token configured: fail closed
    ],
    ids=["tampered", "wrong-key", "missing", "empty", "no-token"],
)
def test_bad_signatures_are_refused(body: bytes, header: str | None, tokens: list[str]) -> None:
    with pytest.raises(Unauthorized):
        qn.verify_signature(body, header, tokens)


def test_previous_token_still_verifies_during_rotation() -> None:
    qn.verify_signature(LEGACY, DOTNET_SIGNATURE, ["new-token", DOTNET_TOKEN])


def test_legacy_sample_parses_into_customer_notice_and_counts_vendor_as_unhandled() -> None:
    parsed = qn.parse_body(LEGACY)
    assert parsed.unhandled == 1 and parsed.unknown == 0
    [customer] = parsed.notices
    assert (customer.realm_id, customer.entity, customer.entity_id, customer.operation) == (
        "1269959970",
        "Customer",
        "43",
        "Create",
    )
    assert customer.source == "webhook-legacy"
    assert customer.dedupe_key == "lg:Customer:43:Create:2016-10-05T03:07:04.000Z"


def test_cloudevents_sampleapp_readme_parses() -> None:
    [n] = qn.parse_body((SAMPLES / "webhook-cloudevents-sampleapp-readme.json").read_bytes()).notices
    assert (n.realm_id, n.entity, n.entity_id, n.operation) == ("310687", "Customer", "1234", "Create")
    assert n.dedupe_key == "ce:88cd52aa-33b6-4351-9aa4-47572edbd068"
    assert n.occurred_at == "2025-09-10T21:31:25.179Z"


def test_cloudevents_dotnet_sample_is_understood_but_not_acted_on() -> None:
    parsed = qn.parse_body((SAMPLES / "webhook-cloudevents-dotnet-sdk-test.json").read_bytes())
    assert parsed.notices == [] and parsed.unhandled == 1 and parsed.unknown == 0


@pytest.mark.parametrize(
    ("ce_type", "expected"),
    [
        ("qbo.invoice.updated.v1", ("Invoice", "Update")),
        ("qbo.invoice.deleted.v1", ("Invoice", "Delete")),
        ("qbo.invoice.voided.v1", ("Invoice", "Void")),
        ("qbo.payment.created.v1", ("Payment", "Create")),
        ("qbo.customer.merged.v1", ("Customer", "Merge")),
        ("qbo.creditmemo.updated.v1", ("CreditMemo", "Update")),
        ("qbo.salesreceipt.updated.v1", ("SalesReceipt", "Update")),
        ("qbo.widget.updated.v1", None),
        ("qbo.invoice.exploded.v1", None),
        ("com.example.invoice.updated", None),
    ],
)
def test_cloudevent_type_mapping(ce_type: str, expected: tuple[str, str] | None) -> None:
    assert qn.parse_cloudevent_type(ce_type) == expected
    if expected:
        assert qn.cloudevent_type(*expected) == ce_type


def test_merge_carries_the_merged_away_id_in_both_formats() -> None:
    ce = [
        {
            "specversion": "1.0",
            "id": "9a11-Customer-58",
            "source": "intuit.x",
            "type": "qbo.customer.merged.v1",
            "time": "2026-01-20T17:03:40Z",
            "intuitentityid": "58",
            "intuitaccountid": "9130",
            "data": {"deletedid": "61"},
        }
    ]
    legacy = {
        "eventNotifications": [
            {
                "realmId": "9130",
                "dataChangeEvent": {
                    "entities": [
                        {
                            "name": "Customer",
                            "id": "58",
                            "operation": "Merge",
                            "lastUpdated": "2026-01-20T17:03:40.000Z",
                            "deletedId": "61",
                        }
                    ]
                },
            }
        ]
    }
    for body in (ce, legacy):
        [n] = qn.parse_body(json.dumps(body).encode()).notices
        assert (n.operation, n.entity_id, n.deleted_id) == ("Merge", "58", "61")


def test_one_cloudevents_post_can_carry_several_realms_and_unknown_events() -> None:
    body = [
        {"id": "a", "type": "qbo.invoice.updated.v1", "intuitentityid": "1", "intuitaccountid": "r1", "time": "t"},
        {"id": "b", "type": "qbo.payment.created.v1", "intuitentityid": "2", "intuitaccountid": "r2", "time": "t"},
        {"id": "c", "type": "qbo.gizmo.created.v1", "intuitentityid": "3", "intuitaccountid": "r2"},
        "not an event",
    ]
    parsed = qn.parse_body(json.dumps(body).encode())
    assert [(n.realm_id, n.entity) for n in parsed.notices] == [("r1", "Invoice"), ("r2", "Payment")]
    assert parsed.unknown == 2


@pytest.mark.parametrize("body", [b"", b"{not json", b"\xff\xfe", b'{"hello": 1}', b"42"])
def test_malformed_or_foreign_bodies_are_bad_requests(body: bytes) -> None:
    with pytest.raises(BadRequest):
        qn.parse_body(body)


def test_cdc_rows_become_notices_keyed_by_last_updated() -> None:
    row = {"Id": "130", "SyncToken": "2", "TotalAmt": 50, "MetaData": {"LastUpdatedTime": "2026-01-21T08:12:00-08:00"}}
    n = qn.cdc_notice("r1", "Invoice", row)
    assert (n.operation, n.dedupe_key, n.data["entity"]) == ("Update", "cdc:Invoice:130:2026-01-21T08:12:00-08:00", row)
    gone = {"Id": "131", "status": "Deleted", "MetaData": {"LastUpdatedTime": "2026-01-21T08:12:00-08:00"}}
    assert qn.cdc_notice("r1", "Invoice", gone).operation == "Delete"
    voided = {**row, "TotalAmt": 0, "PrivateNote": "Voided - x"}
    assert qn.cdc_notice("r1", "Invoice", voided).operation == "Void"


def test_time_comparison_is_at_qbo_second_precision_across_offsets() -> None:
    assert qn.not_newer("2026-01-21T16:12:00.450Z", "2026-01-21T08:12:00-08:00")
    assert not qn.not_newer("2026-01-21T16:12:01.000Z", "2026-01-21T08:12:00-08:00")
    assert not qn.not_newer("garbage", "2026-01-21T08:12:00-08:00")
    assert qn.token_not_newer("3", "3") and qn.token_not_newer("2", "10") and not qn.token_not_newer("4", "3")


def test_callback_ids_are_deterministic_per_change() -> None:
    n = qn.cdc_notice("r1", "Invoice", {"Id": "1", "MetaData": {"LastUpdatedTime": "x"}})
    kw = {"type": "invoice.updated_in_qbo", "tenant_id": "t", "object_key": "appointment:a1", "notice": n}
    a = qn.callback(**kw, qbo_id="1", version="active:3", data={}, created_at="now")  # type: ignore[arg-type]
    b = qn.callback(**kw, qbo_id="1", version="active:3", data={"x": 1}, created_at="later")  # type: ignore[arg-type]
    c = qn.callback(**kw, qbo_id="1", version="active:4", data={}, created_at="now")  # type: ignore[arg-type]
    assert a["id"] == b["id"] != c["id"]
    with pytest.raises(ValueError):
        qn.callback(**{**kw, "type": "invoice.exploded"}, qbo_id="1", version="v", data={}, created_at="n")  # type: ignore[arg-type]
