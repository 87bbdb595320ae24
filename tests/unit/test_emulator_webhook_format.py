"""Webhook signing (Intuit's published test vectors) and payload shapes against the captured samples."""

from __future__ import annotations

import json
from pathlib import Path

from infra.qbo_emulator.books import Change
from infra.qbo_emulator.webhooks import Event, cloudevent, legacy, sign, verify

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "qbo_samples"


def test_dotnet_sdk_signature_vector() -> None:
    body = (SAMPLES / "webhook-legacy-dotnet-sdk-test.json").read_bytes()
    expected = "6q+xGyMirJupwKTh2/WBl2NcdxzxqdIbk3sneKTxLWM="
    assert sign(body, "00faeec4-08d0-4996-bb37-698ae19f0149") == expected
    assert verify(body, expected, "00faeec4-08d0-4996-bb37-698ae19f0149")


def test_python_quickbooks_signature_vector() -> None:
    assert sign(b'{"stuff":"5"}', "verify_me") == "nfPLN16u3vMvv08ghDs+dOkLuirEVDy5wAeG/lmM2OA="
    assert not verify(b'{"stuff":"6"}', "nfPLN16u3vMvv08ghDs+dOkLuirEVDy5wAeG/lmM2OA=", "verify_me")


def _events() -> list[Event]:
    return [
        Event("e1", "310687", "Customer", "43", "Create", 1_760_000_000.0),
        Event("e2", "310687", "Customer", "58", "Merge", 1_760_000_001.0, deleted_id="61"),
    ]


def test_legacy_shape_matches_sample() -> None:
    sample = json.loads((SAMPLES / "webhook-legacy-dotnet-sdk-test.json").read_text())
    got = legacy(_events())
    assert set(got) == set(sample)
    note, sample_note = got["eventNotifications"][0], sample["eventNotifications"][0]
    assert set(note) == set(sample_note)
    assert set(note["dataChangeEvent"]) == set(sample_note["dataChangeEvent"])
    assert set(note["dataChangeEvent"]["entities"][0]) == set(sample_note["dataChangeEvent"]["entities"][0])
    assert note["dataChangeEvent"]["entities"][1]["deletedId"] == "61"
    assert note["dataChangeEvent"]["entities"][0]["lastUpdated"].endswith("Z")


def test_cloudevents_shape_matches_samples() -> None:
    readme = json.loads((SAMPLES / "webhook-cloudevents-sampleapp-readme.json").read_text())[0]
    dotnet = json.loads((SAMPLES / "webhook-cloudevents-dotnet-sdk-test.json").read_text())[0]
    created, merged = (cloudevent(e, "intuit.abc") for e in _events())
    assert set(created) == set(readme)
    assert set(readme) - {"datacontenttype"} <= set(dotnet) | {"data"}
    assert created["type"] == "qbo.customer.created.v1" and created["specversion"] == "1.0"
    assert created["intuitentityid"] == "43" and created["intuitaccountid"] == "310687"
    assert merged["type"] == "qbo.customer.merged.v1" and merged["data"] == {"deletedid": "61"}


def test_change_dataclass_round_trip() -> None:
    ch = Change("1", "Invoice", "9", "Void", 0.0)
    assert (
        cloudevent(Event("x", ch.realm_id, ch.entity, ch.id, ch.operation, ch.ts), "s")["type"]
        == "qbo.invoice.voided.v1"
    )
