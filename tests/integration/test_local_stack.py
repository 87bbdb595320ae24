"""The local runtime on the fixture template (moto for every service): routes, pollers, schedules, env."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from infra.local.stack import LocalStack
from tests.fixtures.local import handlers

pytestmark = pytest.mark.integration

TEMPLATE = Path(__file__).resolve().parents[1] / "fixtures" / "local" / "template.yaml"


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(TEMPLATE, use_ddb_local=False, poll_interval_s=0.05) as s:
        yield s


@pytest.fixture(autouse=True)
def clean(stack: LocalStack) -> Iterator[None]:
    stack.wait_idle(timeout=30)
    handlers.reset()
    yield
    handlers.reset()


def put(stack: LocalStack, *keys: str, rtype: str = "event", **attrs: Any) -> None:
    ddb = stack.client("dynamodb")
    for key in keys:
        item = {"pk": {"S": key}, "sk": {"S": "v1"}, "rtype": {"S": rtype}, **attrs}
        ddb.put_item(TableName=stack.ref("LedgerTable"), Item=item)


def delivered(function: str) -> list[list[str]]:
    """The keys (stream) or bodies (queue) of each batch the function received, in order."""
    batches = []
    for event in handlers.calls(function):
        records = event["Records"]
        batches.append([r["body"] if "body" in r else r["dynamodb"]["Keys"]["pk"]["S"] for r in records])
    return batches


def drain(stack: LocalStack, queue: str) -> list[dict[str, Any]]:
    sqs = stack.client("sqs")
    out = []
    while True:
        msgs = sqs.receive_message(QueueUrl=stack.ref(queue), MaxNumberOfMessages=10).get("Messages", [])
        if not msgs:
            return out
        for m in msgs:
            out.append(m)
            sqs.delete_message(QueueUrl=stack.ref(queue), ReceiptHandle=m["ReceiptHandle"])


# --- gateway ----------------------------------------------------------------------------------------------


def test_rest_api_route_gets_a_v1_event_with_path_parameters(stack: LocalStack) -> None:
    r = requests.get(f"{stack.urls['api']}/ops/things/42?x=1&x=2", headers={"X-Trace": "t1"}, timeout=10)

    assert r.status_code == 200
    assert r.headers["X-Fixture"] == "yes"
    assert r.headers["X-Multi"] == "a, b"  # multiValueHeaders
    (event,) = handlers.calls("RestFunction")
    assert event["resource"] == "/ops/things/{thing_id}"
    assert event["path"] == "/ops/things/42"
    assert event["httpMethod"] == "GET"
    assert event["pathParameters"] == {"thing_id": "42"}
    assert event["queryStringParameters"] == {"x": "2"}
    assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"]}
    assert event["multiValueHeaders"]["X-Trace"] == ["t1"]
    assert event["requestContext"]["stage"] == "Prod"
    assert event["requestContext"]["requestId"]
    assert json.loads(r.text)["remaining_ms"] <= 3000  # the template's Timeout: 3


def test_http_api_routes_get_v2_events_with_path_parameters(stack: LocalStack) -> None:
    post = requests.post(f"{stack.urls['api']}/v1/events?a=1", json={"id": "e1"}, timeout=10)
    item = requests.get(f"{stack.urls['apis']['ServerlessHttpApi']}/v1/items/it-7", timeout=10)
    proxy = requests.put(f"{stack.urls['api']}/files/a/b.bin", data=b"\x00\xff", timeout=10)

    assert (post.status_code, item.status_code, proxy.status_code) == (201, 200, 200)
    ev_post, ev_item, ev_proxy = handlers.calls("HttpFunction")
    assert ev_post["version"] == "2.0" and ev_post["routeKey"] == "POST /v1/events"
    assert ev_post["rawPath"] == "/v1/events" and ev_post["rawQueryString"] == "a=1"
    assert json.loads(ev_post["body"]) == {"id": "e1"} and ev_post["isBase64Encoded"] is False
    assert ev_post["headers"]["content-type"] == "application/json"
    assert ev_post["requestContext"]["stage"] == "$default" and ev_post["requestContext"]["requestId"]
    assert ev_item["pathParameters"] == {"item_id": "it-7"}
    assert ev_proxy["pathParameters"] == {"proxy": "a/b.bin"}
    assert ev_proxy["isBase64Encoded"] is True and base64.b64decode(ev_proxy["body"]) == b"\x00\xff"


def test_unknown_route_answers_404_like_api_gateway(stack: LocalStack) -> None:
    r = requests.get(f"{stack.urls['api']}/no/such/route", timeout=10)
    wrong_method = requests.delete(f"{stack.urls['api']}/v1/events", timeout=10)

    assert (r.status_code, r.json()) == (404, {"message": "Not Found"})
    assert wrong_method.status_code == 404


def test_handlers_see_the_template_environment_resolved_to_local_resources(stack: LocalStack) -> None:
    env = requests.get(f"{stack.urls['api']}/v1/items/x", timeout=10).json()["env"]

    assert env["LEDGER_TABLE"] == "LedgerTable"
    assert env["QUEUE_URL"] == stack.ref("WorkQueue") and env["QUEUE_URL"].startswith(stack.urls["aws"])
    assert env["REGION"] == "us-east-1" and env["STAGE"] == "local"
    assert stack.env["SUBBED"] == "LedgerTable|123456789012|WorkQueue"
    assert stack.env["AWS_ENDPOINT_URL"] == stack.urls["aws"]
    secret = stack.client("secretsmanager").get_secret_value(SecretId=stack.env["SECRET_ARN"])
    assert secret["Name"] == "qbsync/local/api" and len(json.loads(secret["SecretString"])["password"]) == 24


# --- DynamoDB stream ------------------------------------------------------------------------------------


def test_stream_partial_failure_retries_only_the_failed_record(stack: LocalStack) -> None:
    handlers.FAIL_ONCE.add("s-b")
    with stack.paused():
        put(stack, "s-a", "s-b")
    stack.wait_idle(timeout=30)

    assert delivered("StreamFunction") == [["s-a", "s-b"], ["s-b"]]
    record = handlers.calls("StreamFunction")[0]["Records"][0]
    assert record["eventSource"] == "aws:dynamodb" and record["eventName"] == "INSERT"
    assert record["eventSourceARN"] == stack.getatt("LedgerTable", "StreamArn")
    assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], int)
    assert drain(stack, "StreamFailureQueue") == []


def test_stream_record_reaches_on_failure_destination_after_retries(stack: LocalStack) -> None:
    handlers.FAIL.add("f-b")
    with stack.paused():
        put(stack, "f-a", "f-b")
    stack.wait_idle(timeout=30)

    # MaximumRetryAttempts: 1 -> delivered twice, then sent to the OnFailure queue and skipped.
    assert delivered("StreamFunction") == [["f-a", "f-b"], ["f-b"]]
    (msg,) = drain(stack, "StreamFailureQueue")
    info = json.loads(msg["Body"])
    failed_seq = handlers.calls("StreamFunction")[1]["Records"][0]["dynamodb"]["SequenceNumber"]
    assert info["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert info["DDBStreamBatchInfo"]["startSequenceNumber"] == failed_seq
    assert info["DDBStreamBatchInfo"]["batchSize"] == 1
    assert info["DDBStreamBatchInfo"]["streamArn"] == stack.getatt("LedgerTable", "StreamArn")
    assert stack.stats()["on_failure"]["StreamFunctionLedger"] >= 1


def test_stream_error_bisects_the_batch_to_isolate_the_bad_record(stack: LocalStack) -> None:
    handlers.RAISE.add("x-b")
    with stack.paused():
        put(stack, "x-a", "x-b", "x-c")
    stack.wait_idle(timeout=30)

    ok = [b for b in delivered("StreamFunction") if "x-b" not in b]
    assert sorted(k for b in ok for k in b) == ["x-a", "x-c"]
    (msg,) = drain(stack, "StreamFailureQueue")
    assert json.loads(msg["Body"])["DDBStreamBatchInfo"]["batchSize"] == 1


def test_filter_criteria_drop_non_matching_records(stack: LocalStack) -> None:
    before = stack.stats()["filtered"].get("StreamFunctionLedger", 0)
    with stack.paused():
        put(stack, "n-1", rtype="notice")
        put(stack, "o-clean", rtype="object", dirty={"BOOL": False})
        put(stack, "o-dirty", rtype="object", dirty={"BOOL": True})
        put(stack, "e-1", rtype="event")
    stack.wait_idle(timeout=30)

    assert sorted(k for b in delivered("StreamFunction") for k in b) == ["e-1", "o-dirty"]
    assert stack.stats()["filtered"]["StreamFunctionLedger"] - before == 2


# --- SQS ------------------------------------------------------------------------------------------------


def test_queue_partial_failure_retries_only_the_failed_message(stack: LocalStack) -> None:
    handlers.FAIL_ONCE.add("q-bad")
    sqs = stack.client("sqs")
    with stack.paused():
        for body in ("q-ok", "q-bad"):
            sqs.send_message(QueueUrl=stack.ref("WorkQueue"), MessageBody=body)
    stack.wait_idle(timeout=30)

    batches = delivered("QueueFunction")
    assert sorted(batches[0]) == ["q-bad", "q-ok"] and batches[1:] == [["q-bad"]]
    retry = handlers.calls("QueueFunction")[1]["Records"][0]
    assert retry["attributes"]["ApproximateReceiveCount"] == "2"
    assert retry["eventSource"] == "aws:sqs" and retry["eventSourceARN"] == stack.getatt("WorkQueue", "Arn")
    assert drain(stack, "WorkDLQ") == []


def test_queue_message_reaches_dlq_after_max_receive_count(stack: LocalStack) -> None:
    handlers.FAIL.add("q-poison")
    stack.client("sqs").send_message(QueueUrl=stack.ref("WorkQueue"), MessageBody="q-poison")
    stack.wait_idle(timeout=30)

    assert delivered("QueueFunction") == [["q-poison"], ["q-poison"]]  # maxReceiveCount: 2
    assert [m["Body"] for m in drain(stack, "WorkDLQ")] == ["q-poison"]


# --- direct invocation and schedules ------------------------------------------------------------------


def test_invoke_and_trigger_schedule_call_the_real_handler(stack: LocalStack) -> None:
    assert stack.invoke("ScheduledFunction", {"direct": True}) == {"ok": True}
    assert stack.trigger_schedule("ScheduledFunctionSweep") == {"ok": True}
    stack.trigger_schedule("ScheduledFunctionNightly")

    direct, sweep, nightly = handlers.calls("ScheduledFunction")
    assert direct == {"direct": True}
    assert sweep == {"job": "sweep"}  # the rule's Input
    assert nightly == {}
    assert stack.stats()["schedules"]["ScheduledFunctionSweep"] >= 1


def test_wait_idle_covers_records_written_while_pollers_run(stack: LocalStack) -> None:
    started = time.monotonic()
    put(stack, "w-1")
    stack.wait_idle(timeout=30)

    assert delivered("StreamFunction") == [["w-1"]]
    assert time.monotonic() - started < 10
