"""The sync worker takes at most ``SYNC_REALM_SHARE`` objects of one realm per invocation; the rest of that realm's
records go back to the stream's tail, so a flooded realm does not hold up the other realms' records."""

from __future__ import annotations

from typing import Any

import pytest

from shared.adapters.dynamo import ObjectItem
from shared.adapters.objects import object_pk
from shared.config import reset_settings_cache
from tests.builders import lambda_context, tenant_row

pytestmark = pytest.mark.integration


def _tenant(tenant_id: str, realm_id: str) -> None:
    # QuickBooks → platform only: a reconcile ends "skipped" without calling QuickBooks.
    tenant_row(tenant_id, realm_id, settings={"direction": "from_qbo"})


def _dirty(tenant_id: str, n: int) -> ObjectItem:
    item = ObjectItem(
        object_pk(tenant_id, f"appointment:a{n}"),
        "OBJ",
        rtype="object",
        tenant_id=tenant_id,
        object_key=f"appointment:a{n}",
        kind="appointment",
        desired_version=1,
        dirty=True,
        updated_at="2026-11-01T00:00:00.000+00:00",
    )
    item.save()
    return item


def _records(items: list[ObjectItem]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventID": f"e{i}",
                "eventName": "MODIFY",
                "eventSource": "aws:dynamodb",
                "dynamodb": {"NewImage": item.serialize(), "SequenceNumber": f"{i + 1:021d}"},
            }
            for i, item in enumerate(items)
        ]
    }


def test_a_flooded_realm_takes_its_share_and_the_rest_goes_back_to_the_stream(
    moto_aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNC_REALM_SHARE", "2")
    reset_settings_cache()
    from functions.sync_worker import handler

    _tenant("flooded", "realm-1")
    _tenant("quiet", "realm-2")
    flood = [_dirty("flooded", n) for n in range(5)]
    quiet = [_dirty("quiet", n) for n in range(2)]

    def state(tenant_id: str, n: int) -> tuple[str, bool, str]:
        got = ObjectItem.get(object_pk(tenant_id, f"appointment:a{n}"), "OBJ")
        return got.status, got.dirty, got.updated_at

    assert handler.lambda_handler(_records(flood + quiet), lambda_context()) == {"batchItemFailures": []}
    after = [state("flooded", n) for n in range(5)]
    assert sorted(s for s, _, _ in after) == ["pending"] * 3 + ["skipped"] * 2
    requeued = [(d, u) for s, d, u in after if s == "pending"]
    assert all(dirty and updated != "2026-11-01T00:00:00.000+00:00" for dirty, updated in requeued)
    assert [state("quiet", n)[:2] for n in range(2)] == [("skipped", False)] * 2  # never behind the flood

    # The requeued objects' new records come round in the next invocation, which has a share of its own.
    again = [ObjectItem.get(object_pk("flooded", f"appointment:a{n}"), "OBJ") for n in range(5)]
    handler.lambda_handler(_records([o for o in again if o.dirty]), lambda_context())
    assert sorted(state("flooded", n)[0] for n in range(5)) == ["pending"] + ["skipped"] * 4
    reset_settings_cache()
