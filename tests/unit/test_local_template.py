"""The template model the local stack reads: every piece of wiring comes from the SAM-transformed template."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra.local.aws import generate_secret_string
from infra.local.schedules import next_cron, rate_seconds
from infra.local.template import Resolver, TemplateModel, load_template

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "local"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model() -> TemplateModel:
    return load_template(FIXTURES / "template.yaml")


def test_tables_keep_keys_indexes_stream_and_ttl(model: TemplateModel) -> None:
    table = model.tables["LedgerTable"]
    assert [k["AttributeName"] for k in table.key_schema] == ["pk", "sk"]
    assert [g["IndexName"] for g in table.global_indexes] == ["gsi1"]
    assert table.stream_view_type == "NEW_AND_OLD_IMAGES"
    assert table.ttl_attribute == "expires_at"


def test_queues_know_their_dead_letter_queue(model: TemplateModel) -> None:
    assert model.queues["WorkQueue"].dead_letter_id == "WorkDLQ"
    assert model.queues["WorkQueue"].max_receive_count == 2
    assert model.queues["WorkQueue"].attributes["VisibilityTimeout"] == 1


def test_functions_are_located_from_their_original_code_uri(model: TemplateModel) -> None:
    fn = model.functions["RestFunction"]
    assert fn.code_dir == REPO
    assert fn.handler == "tests.fixtures.local.handlers.http_handler"
    assert (fn.timeout_s, fn.memory_mb) == (3, 256)


def test_routes_carry_api_kind_payload_version_and_stage(model: TemplateModel) -> None:
    routes = {(r.method, r.path): r for r in model.routes}
    assert routes[("POST", "/v1/events")].kind == "http"
    assert routes[("POST", "/v1/events")].payload_version == "2.0"
    assert routes[("ANY", "/files/{proxy+}")].function_id == "HttpFunction"
    rest = routes[("GET", "/ops/things/{thing_id}")]
    assert (rest.kind, rest.payload_version, rest.stage, rest.function_id) == ("rest", "1.0", "Prod", "RestFunction")


def test_event_source_mappings_keep_every_lambda_setting(model: TemplateModel) -> None:
    stream = model.event_sources["StreamFunctionLedger"]
    assert (stream.source_kind, stream.source_id, stream.function_id) == ("dynamodb", "LedgerTable", "StreamFunction")
    assert stream.batch_size == 10 and stream.parallelization_factor == 1
    assert stream.report_batch_item_failures and stream.bisect_on_error
    assert stream.maximum_retry_attempts == 1
    assert stream.on_failure_id == "StreamFailureQueue"
    assert len(stream.filters) == 2 and stream.filters[0]["eventName"] == ["INSERT"]
    queue = model.event_sources["QueueFunctionWork"]
    assert (queue.source_kind, queue.source_id, queue.batch_size) == ("sqs", "WorkQueue", 5)


def test_template_variant_changes_are_read_without_code_changes() -> None:
    variant = load_template(FIXTURES / "template_b.yaml")
    assert variant.event_sources["StreamFunctionLedger"].batch_size == 2
    assert variant.event_sources["StreamFunctionLedger"].parallelization_factor == 2
    assert ("GET", "/v2/status/{check}") in {(r.method, r.path) for r in variant.routes}


def test_schedules_from_rules_and_scheduler(model: TemplateModel) -> None:
    sweep, nightly = model.schedules["ScheduledFunctionSweep"], model.schedules["ScheduledFunctionNightly"]
    assert (sweep.kind, sweep.expression, sweep.input) == ("rule", "rate(5 minutes)", '{"job": "sweep"}')
    assert (nightly.kind, nightly.expression, nightly.function_id) == (
        "scheduler",
        "cron(0 3 * * ? *)",
        "ScheduledFunction",
    )


def test_resolver_resolves_refs_getatts_subs_and_pseudo_parameters(model: TemplateModel) -> None:
    resolver = Resolver(
        model,
        "eu-west-1",
        "111122223333",
        refs={"LedgerTable": "LedgerTable", "WorkQueue": "http://q/WorkQueue"},
        attrs={("WorkQueue", "QueueName"): "WorkQueue", ("WorkQueue", "Arn"): "arn:aws:sqs:eu-west-1:1:WorkQueue"},
    )
    env = {k: resolver.resolve(v) for k, v in model.functions["HttpFunction"].environment.items()}
    assert env["LEDGER_TABLE"] == "LedgerTable"
    assert env["QUEUE_URL"] == "http://q/WorkQueue"
    assert env["QUEUE_ARN"] == "arn:aws:sqs:eu-west-1:1:WorkQueue"
    assert env["REGION"] == "eu-west-1"
    assert env["STAGE"] == "local"
    assert env["SUBBED"] == "LedgerTable|111122223333|WorkQueue"
    assert resolver.resolve({"Fn::Join": ["-", ["a", {"Ref": "Stage"}]]}) == "a-local"
    assert resolver.resolve({"Fn::Sub": ["${X}/${!Literal}", {"X": {"Ref": "AWS::Partition"}}]}) == "aws/${Literal}"


def test_schedule_expressions() -> None:
    assert rate_seconds("rate(5 minutes)") == 300
    assert rate_seconds("rate(1 hour)") == 3600
    after = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # a Wednesday
    assert next_cron("cron(0 3 * * ? *)", after) == datetime(2026, 3, 5, 3, 0, tzinfo=UTC)
    assert next_cron("cron(15 10 ? * MON-FRI *)", datetime(2026, 3, 6, 11, 0, tzinfo=UTC)) == datetime(
        2026, 3, 9, 10, 15, tzinfo=UTC
    )
    assert next_cron("cron(0/20 * * * ? *)", after) == datetime(2026, 3, 4, 12, 20, tzinfo=UTC)


def test_generated_secret_honours_template_and_options() -> None:
    value = generate_secret_string(
        {
            "SecretStringTemplate": '{"user": "u"}',
            "GenerateStringKey": "pw",
            "PasswordLength": 20,
            "ExcludePunctuation": True,
        }
    )
    import json

    doc = json.loads(value)
    assert doc["user"] == "u" and len(doc["pw"]) == 20 and doc["pw"].isalnum()
