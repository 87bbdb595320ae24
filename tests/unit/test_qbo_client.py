"""QboClient wire behaviour against `responses` fakes (no network)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
import responses
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from shared.adapters.qbo.client import QboClient
from shared.adapters.qbo.faults import (
    QboNotFound,
    QboPermanent,
    QboRetryable,
    QboStale,
    QboThrottled,
    QboUnauthorized,
)
from shared.adapters.qbo.types import BatchOp
from shared.config import Settings
from shared.observability import metrics

BASE = "https://qbo.test"
REALM = "9130350000000001"
API = f"{BASE}/v3/company/{REALM}"


class FakeTokens:
    def __init__(self) -> None:
        self.current = "access-1"
        self.refreshes = 0

    def access_token(self, realm_id: str) -> str:
        return self.current

    def refresh_after_401(self, realm_id: str, rejected: str) -> str:
        self.refreshes += 1
        self.current = f"access-{self.refreshes + 1}"
        return self.current


class OpenPacer:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    @contextmanager
    def acquire(self, kind: str = "request") -> Iterator[None]:
        self.kinds.append(kind)
        yield


def make_client(**settings: Any) -> tuple[QboClient, FakeTokens, OpenPacer]:
    tokens, pacer = FakeTokens(), OpenPacer()
    cfg = Settings.from_env({"LEDGER_TABLE": "t", "QBO_BASE_URL": BASE, **settings})
    return QboClient(REALM, tokens=tokens, pacer=pacer, settings=cfg), tokens, pacer  # type: ignore[arg-type]


def qs(call: Any) -> dict[str, list[str]]:
    return parse_qs(urlparse(call.request.url).query)


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as r:
        yield r


def test_create_sends_minorversion_requestid_and_json_headers(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{API}/invoice", json={"Invoice": {"Id": "130", "SyncToken": "0"}}, headers={"intuit_tid": "tid-1"})
    client, _, pacer = make_client()

    out = client.create("Invoice", {"DocNumber": "BK-1"}, request_id="rid-1")

    assert out == {"Id": "130", "SyncToken": "0"}
    call = rsps.calls[0]
    assert qs(call) == {"minorversion": ["75"], "requestid": ["rid-1"]}
    assert call.request.headers["Authorization"] == "Bearer access-1"
    assert call.request.headers["Accept"] == "application/json"
    assert call.request.headers["Content-Type"] == "application/json"
    assert json.loads(call.request.body) == {"DocNumber": "BK-1"}
    assert (client.stats.writes, client.stats.reads, client.stats.http_calls) == (1, 0, 1)
    assert pacer.kinds == ["request"]


def test_reads_carry_minorversion_but_no_requestid(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{API}/customer/58", json={"Customer": {"Id": "58"}})
    client, _, _ = make_client()

    assert client.read("Customer", "58") == {"Id": "58"}
    assert qs(rsps.calls[0]) == {"minorversion": ["75"]}
    assert client.stats.reads == 1


def test_request_id_longer_than_50_is_refused_before_any_call(rsps: responses.RequestsMock) -> None:
    client, _, _ = make_client()
    with pytest.raises(ValueError, match="requestid"):
        client.create("Invoice", {}, request_id="x" * 51)
    assert len(rsps.calls) == 0


def test_update_is_sparse_by_default(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{API}/invoice", json={"Invoice": {"Id": "1", "SyncToken": "2"}})
    client, _, _ = make_client()
    client.update("Invoice", {"Id": "1", "SyncToken": "1", "DueDate": "2026-02-28"}, request_id="u1")
    assert json.loads(rsps.calls[0].request.body)["sparse"] is True


def test_delete_uses_operation_delete(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{API}/payment", json={"Payment": {"status": "Deleted", "Id": "88"}})
    client, _, _ = make_client()
    out = client.delete("Payment", "88", "1", request_id="d1")
    assert out["status"] == "Deleted"
    assert qs(rsps.calls[0])["operation"] == ["delete"]
    assert json.loads(rsps.calls[0].request.body) == {"Id": "88", "SyncToken": "1"}


def test_void_invoice_uses_operation_void(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{API}/invoice", json={"Invoice": {"Id": "130", "PrivateNote": "Voided"}})
    client, _, _ = make_client()
    client.void("Invoice", "130", "3", request_id="v1")
    assert qs(rsps.calls[0])["operation"] == ["void"]
    assert json.loads(rsps.calls[0].request.body) == {"Id": "130", "SyncToken": "3"}


def test_void_payment_is_update_include_void_sparse(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{API}/payment", json={"Payment": {"Id": "88"}})
    client, _, _ = make_client()
    client.void("Payment", "88", "1", request_id="v2")
    q = qs(rsps.calls[0])
    assert (q["operation"], q["include"]) == (["update"], ["void"])
    assert json.loads(rsps.calls[0].request.body) == {"Id": "88", "SyncToken": "1", "sparse": True}


def test_void_credit_memo_is_refused_without_a_call(rsps: responses.RequestsMock) -> None:
    client, _, _ = make_client()
    with pytest.raises(QboPermanent):
        client.void("CreditMemo", "212", "0", request_id="v3")
    assert len(rsps.calls) == 0


def test_query_pages_by_1000_with_post_application_text(rsps: responses.RequestsMock) -> None:
    page1 = [{"Id": str(i)} for i in range(1000)]
    rsps.post(f"{API}/query", json={"QueryResponse": {"Customer": page1, "startPosition": 1, "maxResults": 1000}})
    rsps.post(f"{API}/query", json={"QueryResponse": {"Customer": [{"Id": "x"}], "startPosition": 1001}})
    client, _, _ = make_client()

    rows = client.query("select * from Customer")

    assert len(rows) == 1001
    bodies = [c.request.body.decode() for c in rsps.calls]
    assert bodies == [
        "select * from Customer STARTPOSITION 1 MAXRESULTS 1000",
        "select * from Customer STARTPOSITION 1001 MAXRESULTS 1000",
    ]
    assert rsps.calls[0].request.headers["Content-Type"] == "application/text"
    assert client.stats.reads == 2


def test_query_pages_on_from_a_start_position(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{API}/query", json={"QueryResponse": {"Item": [{"Id": str(i)} for i in range(1000)]}})
    rsps.post(f"{API}/query", json={"QueryResponse": {"Item": [{"Id": "last"}]}})
    client, _, _ = make_client()

    rows = client.query("select * from Item", start=1001)

    assert len(rows) == 1001
    assert [c.request.body.decode() for c in rsps.calls] == [
        "select * from Item STARTPOSITION 1001 MAXRESULTS 1000",
        "select * from Item STARTPOSITION 2001 MAXRESULTS 1000",
    ]


def test_query_with_no_match_returns_empty_list(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{API}/query", json={"QueryResponse": {}, "time": "t"})
    client, _, _ = make_client()
    assert client.query("select * from Item where Name = 'x'") == []


def test_count_query_returns_total(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{API}/query", json={"QueryResponse": {"totalCount": 7}})
    client, _, _ = make_client()
    assert client.query("SELECT COUNT(*) FROM Invoice") == [{"totalCount": 7}]


def test_401_refreshes_once_and_retries_with_the_same_requestid(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{API}/invoice", status=401, json={"fault": {"error": [{"code": "3200"}], "type": "AUTHENTICATION"}})
    rsps.post(f"{API}/invoice", json={"Invoice": {"Id": "130"}})
    client, tokens, _ = make_client()

    assert client.create("Invoice", {}, request_id="rid-401")["Id"] == "130"

    assert tokens.refreshes == 1
    assert [qs(c)["requestid"] for c in rsps.calls] == [["rid-401"], ["rid-401"]]
    assert rsps.calls[1].request.headers["Authorization"] == "Bearer access-2"
    assert (client.stats.retries_401, client.stats.writes, client.stats.http_calls) == (1, 1, 2)


def test_second_401_raises_unauthorized_after_one_refresh(rsps: responses.RequestsMock) -> None:
    body = {
        "fault": {
            "error": [{"message": "message=AuthenticationFailed; errorCode=003200", "detail": "d", "code": "3200"}],
            "type": "AUTHENTICATION",
        }
    }
    rsps.get(f"{API}/preferences", status=401, json=body)
    rsps.get(f"{API}/preferences", status=401, json=body)
    client, tokens, _ = make_client()

    with pytest.raises(QboUnauthorized) as err:
        client.preferences()
    assert err.value.code == "3200"
    assert tokens.refreshes == 1
    assert len(rsps.calls) == 2


def test_xml_throttle_body_is_a_throttle_fault(rsps: responses.RequestsMock) -> None:
    xml = (
        '<?xml version="1.0"?><IntuitResponse><Fault type="SERVICE"><Error code="3001">'
        "<Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>"
        "<Detail>The request limit was reached.</Detail></Error></Fault></IntuitResponse>"
    )
    rsps.get(f"{API}/customer/1", status=429, body=xml, content_type="application/xml")
    client, _, _ = make_client()
    metrics().clear_metrics()
    with pytest.raises(QboThrottled) as err:
        client.read("Customer", "1")
    assert err.value.code == "3001"
    assert client.stats.throttled == 1
    # ThrottlingAlarm's metric.
    assert metrics().metric_set["QboThrottled"]["Value"] == [1.0]
    metrics().clear_metrics()


def test_historic_403_throttle_is_a_throttle_fault(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{API}/customer/1", status=403, body="<Fault><Error>ThrottleExceeded</Error></Fault>")
    client, _, _ = make_client()
    with pytest.raises(QboThrottled):
        client.read("Customer", "1")


def test_fault_inside_http_200_is_raised(rsps: responses.RequestsMock) -> None:
    fault = {
        "Fault": {
            "Error": [{"Message": "Duplicate Name Exists Error", "code": "6240"}],
            "type": "ValidationFault",
        }
    }
    rsps.post(f"{API}/customer", json=fault, headers={"intuit_tid": "tid-6240"})
    client, _, _ = make_client()
    with pytest.raises(QboPermanent) as err:
        client.create("Customer", {"DisplayName": "Ada"}, request_id="c1")
    assert (err.value.code, err.value.intuit_tid, err.value.uncertain) == ("6240", "tid-6240", False)


def test_stale_sync_token_is_qbo_stale(rsps: responses.RequestsMock) -> None:
    rsps.post(
        f"{API}/invoice",
        status=400,
        json={"Fault": {"Error": [{"Message": "Stale Object Error", "code": "5010"}]}},
    )
    client, _, _ = make_client()
    with pytest.raises(QboStale):
        client.update("Invoice", {"Id": "1", "SyncToken": "0"}, request_id="s1")


def test_404_read_is_not_found(rsps: responses.RequestsMock) -> None:
    rsps.get(
        f"{API}/invoice/9",
        status=400,
        json={"Fault": {"Error": [{"Message": "Object Not Found", "code": "610"}]}},
    )
    client, _, _ = make_client()
    with pytest.raises(QboNotFound):
        client.read("Invoice", "9")


def test_5xx_on_a_write_is_uncertain_but_not_on_a_read(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{API}/invoice", status=503, body="unavailable")
    rsps.get(f"{API}/invoice/1", status=503, body="unavailable")
    client, _, _ = make_client()
    with pytest.raises(QboRetryable) as w:
        client.create("Invoice", {}, request_id="r5")
    with pytest.raises(QboRetryable) as r:
        client.read("Invoice", "1")
    assert (w.value.uncertain, r.value.uncertain) == (True, False)


def test_read_timeout_on_a_write_is_uncertain(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{API}/payment", body=requests.ReadTimeout("read timed out"))
    client, _, _ = make_client()
    with pytest.raises(QboRetryable) as err:
        client.create("Payment", {}, request_id="t1")
    assert err.value.uncertain is True


def test_read_timeout_on_a_read_is_certain(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{API}/payment/1", body=requests.ReadTimeout("read timed out"))
    client, _, _ = make_client()
    with pytest.raises(QboRetryable) as err:
        client.read("Payment", "1")
    assert err.value.uncertain is False


def test_connection_reset_during_a_write_is_uncertain(rsps: responses.RequestsMock) -> None:
    reset = requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")))
    rsps.post(f"{API}/invoice", body=reset)
    client, _, _ = make_client()
    with pytest.raises(QboRetryable) as err:
        client.create("Invoice", {}, request_id="cr")
    assert err.value.uncertain is True


def test_refused_connection_is_certain_even_for_a_write(rsps: responses.RequestsMock) -> None:
    refused = requests.ConnectionError(MaxRetryError(None, "/", NewConnectionError(None, "refused")))  # type: ignore[arg-type]
    rsps.post(f"{API}/invoice", body=refused)
    client, _, _ = make_client()
    with pytest.raises(QboRetryable) as err:
        client.create("Invoice", {}, request_id="cr")
    assert err.value.uncertain is False


def test_batch_matches_results_by_bid_and_maps_item_faults(rsps: responses.RequestsMock) -> None:
    rsps.post(
        f"{API}/batch",
        json={
            "BatchItemResponse": [
                {
                    "bId": "v1",
                    "Fault": {"type": "ValidationFault", "Error": [{"code": "6540", "Message": "dep"}]},
                },
                {"bId": "q1", "QueryResponse": {"Item": [{"Id": "7"}], "startPosition": 1, "maxResults": 1}},
                {"bId": "c1", "Customer": {"Id": "164"}},
            ]
        },
    )
    client, _, pacer = make_client()
    ops = [
        BatchOp("c1", "create", "Customer", {"DisplayName": "Ada"}),
        BatchOp("q1", "query", "Item", {"query": "select * from Item"}),
        BatchOp("v1", "void", "Payment", {"Id": "88", "SyncToken": "1"}),
    ]

    out = client.batch(ops, request_id="batch-1")

    assert [r.bid for r in out] == ["c1", "q1", "v1"]
    assert out[0].entity == {"Id": "164"}
    assert out[1].rows == [{"Id": "7"}]
    assert isinstance(out[2].fault, QboPermanent) and out[2].fault.code == "6540"
    sent = json.loads(rsps.calls[0].request.body)["BatchItemRequest"]
    assert sent[1] == {"bId": "q1", "Query": "select * from Item"}
    assert sent[2] == {
        "bId": "v1",
        "operation": "update",
        "optionsData": "void",
        "Payment": {"Id": "88", "SyncToken": "1", "sparse": True},
    }
    assert qs(rsps.calls[0])["requestid"] == ["batch-1"]
    assert (client.stats.batches, client.stats.batch_items, pacer.kinds) == (1, 3, ["batch"])


def test_batch_missing_item_is_an_uncertain_retryable(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{API}/batch", json={"BatchItemResponse": []})
    client, _, _ = make_client()
    out = client.batch([BatchOp("c1", "create", "Customer", {})], request_id="b")
    assert isinstance(out[0].fault, QboRetryable) and out[0].fault.uncertain


def test_batch_limits_request_id_and_bid_length(rsps: responses.RequestsMock) -> None:
    client, _, _ = make_client()
    with pytest.raises(ValueError):
        client.batch([BatchOp("c1", "create", "Customer", {})], request_id="x" * 37)
    with pytest.raises(ValueError):
        client.batch([BatchOp("b" * 11, "create", "Customer", {})], request_id="ok")
    assert len(rsps.calls) == 0


def test_batch_is_chunked_by_batch_size_with_a_request_id_per_chunk(rsps: responses.RequestsMock) -> None:
    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        items = json.loads(request.body)["BatchItemRequest"]
        return (
            200,
            {},
            json.dumps({"BatchItemResponse": [{"bId": i["bId"], "Item": {"Id": i["bId"]}} for i in items]}),
        )

    rsps.add_callback(responses.POST, f"{API}/batch", callback=answer)
    client, _, _ = make_client(QBO_BATCH_SIZE=2)
    ops = [BatchOp(f"b{i}", "create", "Item", {"Name": str(i)}) for i in range(5)]

    out = client.batch(ops, request_id="chunked")

    assert [r.entity for r in out] == [{"Id": f"b{i}"} for i in range(5)]
    rids = [qs(c)["requestid"][0] for c in rsps.calls]
    assert len(rids) == 3 and len(set(rids)) == 3 and all(len(r) <= 36 for r in rids)


def test_cdc_groups_changed_objects_by_entity(rsps: responses.RequestsMock) -> None:
    rsps.get(
        f"{API}/cdc",
        json={
            "CDCResponse": [
                {
                    "QueryResponse": [
                        {"Invoice": [{"Id": "130"}, {"Id": "131", "status": "Deleted"}], "startPosition": 1},
                        {"Payment": [{"Id": "88"}]},
                    ]
                }
            ]
        },
    )
    client, _, _ = make_client()
    out = client.cdc(["Invoice", "Payment", "Customer"], datetime(2026, 1, 20, 9, tzinfo=UTC))
    assert out == {
        "Invoice": [{"Id": "130"}, {"Id": "131", "status": "Deleted"}],
        "Payment": [{"Id": "88"}],
        "Customer": [],
    }
    q = qs(rsps.calls[0])
    assert q["entities"] == ["Invoice,Payment,Customer"] and q["changedSince"] == ["2026-01-20T09:00:00+00:00"]


def test_company_info_and_preferences_unwrap(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{API}/companyinfo/{REALM}", json={"CompanyInfo": {"CompanyName": "Acme PT"}})
    rsps.get(f"{API}/preferences", json={"Preferences": {"SalesFormsPrefs": {"CustomTxnNumbers": True}}})
    client, _, _ = make_client()
    assert client.company_info()["CompanyName"] == "Acme PT"
    assert client.preferences()["SalesFormsPrefs"]["CustomTxnNumbers"] is True
