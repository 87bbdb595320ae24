"""Least privilege, proven on the SAM-transformed template: every function role holds exactly the actions and
resources its code needs (declared below, with the reason for each), nothing with a ``*`` action or resource
of its own, no secret outside its prefix, and the webhook's grant is checked against the DynamoDB calls the
handler really makes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.template_check import load_template, transform
from tests import builders as b

TABLE_CRUD = frozenset(
    {
        "dynamodb:GetItem",
        "dynamodb:DeleteItem",
        "dynamodb:PutItem",
        "dynamodb:Scan",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:BatchGetItem",
        "dynamodb:DescribeTable",
        "dynamodb:ConditionCheckItem",
    }
)
TABLE_READ = frozenset(
    {"dynamodb:GetItem", "dynamodb:Scan", "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:DescribeTable"}
)
# The ingest writes events (conditional puts, or one transaction of puts), reads tenants, and reads stored
# hashes back for repeats. It never updates, deletes or scans.
INGEST_TABLE = frozenset(
    {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:BatchGetItem", "dynamodb:ConditionCheckItem"}
)
STREAM_READ = {
    "stream": frozenset(
        {"dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"}
    )
}
REALM_TOKENS = frozenset(
    {"secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue", "secretsmanager:DescribeSecret"}
)
SEND = frozenset({"sqs:SendMessage*"})

# function -> resource label -> actions. Labels: table, indexes, stream, queue:<Q>, secret:<name or glob>.
EXPECTED: dict[str, dict[str, frozenset[str]]] = {
    # POST /v1/events: writes events, reads tenants + their signing secrets (tenants/*, read only).
    "BookingWebhookFunction": {
        "table": INGEST_TABLE,
        "secret:tenants/*": frozenset({"secretsmanager:GetSecretValue"}),
    },
    # Applies events, reconciles objects (leases, updates, deletes of intents), refreshes realm tokens under
    # the app credentials, dead-letters failures; consumes the ledger stream.
    "SyncWorkerFunction": {
        "table": TABLE_CRUD,
        "indexes": TABLE_CRUD,
        **STREAM_READ,
        "queue:DeadLetterQueue": SEND | {"sqs:SendMessage"},
        "secret:realms/*": REALM_TOKENS,
        "secret:QboAppSecret": REALM_TOKENS,
    },
    # POST /webhooks/qbo: stores notices, reads the verifier token (only that secret).
    "QboWebhookFunction": {
        "table": TABLE_CRUD,
        "indexes": TABLE_CRUD,
        "secret:QboWebhookVerifierSecret": frozenset({"secretsmanager:GetSecretValue"}),
    },
    # Notices -> QBO reads (tokens) -> ledger -> callback queue; failures dead-lettered; stream consumer.
    "QboChangeWorkerFunction": {
        "table": TABLE_CRUD,
        "indexes": TABLE_CRUD,
        **STREAM_READ,
        "queue:CallbackQueue": SEND,
        "queue:DeadLetterQueue": SEND | {"sqs:SendMessage"},
        "secret:realms/*": REALM_TOKENS,
        "secret:QboAppSecret": REALM_TOKENS,
    },
    # Reads the ledger and signs callbacks with the tenant's signing secret; SQS consumer (managed policy).
    "CallbackSenderFunction": {
        "table": TABLE_READ,
        "indexes": TABLE_READ,
        "secret:tenants/*": frozenset({"secretsmanager:GetSecretValue"}),
    },
    "CdcSweepFunction": {
        "table": TABLE_CRUD,
        "indexes": TABLE_CRUD,
        "secret:realms/*": REALM_TOKENS,
        "secret:QboAppSecret": REALM_TOKENS,
    },
    # Only the ledger: it marks work due again, the stream does the rest.
    "RetrySweepFunction": {"table": TABLE_CRUD, "indexes": TABLE_CRUD},
    # Failures, dead letters (redrive: receive/delete), mappings, connections, tenant secret rotation.
    "OpsApiFunction": {
        "table": TABLE_CRUD,
        "indexes": TABLE_CRUD,
        "queue:DeadLetterQueue": SEND
        | {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"},
        "secret:realms/*": REALM_TOKENS,
        "secret:QboAppSecret": REALM_TOKENS,
        "secret:tenants/*": frozenset(
            {"secretsmanager:CreateSecret", "secretsmanager:PutSecretValue", "secretsmanager:GetSecretValue"}
        ),
    },
    # Connect / callback / disconnect: creates and writes the realm's token secret, reads the app credentials.
    "OAuthFunction": {
        "table": TABLE_CRUD,
        "indexes": TABLE_CRUD,
        "secret:realms/*": REALM_TOKENS | {"secretsmanager:CreateSecret"},
        "secret:QboAppSecret": frozenset({"secretsmanager:GetSecretValue"}),
    },
}
BASIC = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
# AWS-managed policies SAM attaches for event source mappings (the Lambda service polls with the role).
MANAGED = {
    "SyncWorkerFunction": {BASIC, "arn:aws:iam::aws:policy/service-role/AWSLambdaDynamoDBExecutionRole"},
    "QboChangeWorkerFunction": {BASIC, "arn:aws:iam::aws:policy/service-role/AWSLambdaDynamoDBExecutionRole"},
    "CallbackSenderFunction": {BASIC, "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole"},
}


@pytest.fixture(scope="module")
def transformed() -> dict[str, Any]:
    return transform(load_template())


def _render(node: Any) -> str:
    """An intrinsic-function resource as a readable string (``${LedgerTable}``, ``${DeadLetterQueue.Arn}``)."""
    if isinstance(node, str):
        return node
    if "Ref" in node:
        return "${" + node["Ref"] + "}"
    if "Fn::GetAtt" in node:
        return "${" + ".".join(node["Fn::GetAtt"]) + "}"
    if "Fn::Sub" in node:
        sub = node["Fn::Sub"]
        if isinstance(sub, str):
            return sub
        template, values = sub
        for k, v in values.items():
            template = template.replace("${" + k + "}", _render(v))
        return str(template)
    raise AssertionError(f"unexpected intrinsic in a policy resource: {node}")


def _label(resource: str) -> str:
    table = "table/${LedgerTable}"
    prefix = "secret:${SecretsPrefix}/"
    if resource.endswith(table) or resource == "${LedgerTable.Arn}":
        return "table"
    if resource.endswith(table + "/index/*"):
        return "indexes"
    if resource.endswith(table + "/stream/*"):
        return "stream"
    if ":sqs:" in resource:
        return "queue:" + resource.rsplit("${", 1)[1].split(".", maxsplit=1)[0]
    if resource.startswith("${") and resource.endswith(".Arn}"):
        return "queue:" + resource[2:].split(".", maxsplit=1)[0]
    if prefix in resource:
        return "secret:" + resource.split(prefix, 1)[1]
    if resource in ("${QboAppSecret}", "${QboWebhookVerifierSecret}"):
        return "secret:" + resource[2:-1]
    raise AssertionError(f"a policy names a resource this test does not know: {resource}")


def _grants(role: dict[str, Any]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for policy in role["Properties"].get("Policies", []):
        for st in policy["PolicyDocument"]["Statement"]:
            assert st["Effect"] == "Allow"
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            for r in resources:
                out.setdefault(_label(_render(r)), set()).update(actions)
    return out


def _roles(transformed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    res = transformed["Resources"]
    return {
        name: res[fn["Properties"]["Role"]["Fn::GetAtt"][0]]
        for name, fn in res.items()
        if fn["Type"] == "AWS::Lambda::Function"
    }


def test_every_function_is_in_the_least_privilege_map(transformed: dict[str, Any]) -> None:
    assert set(_roles(transformed)) == set(EXPECTED)


@pytest.mark.parametrize("function", sorted(EXPECTED))
def test_function_role_grants_exactly_what_its_code_needs(transformed: dict[str, Any], function: str) -> None:
    role = _roles(transformed)[function]
    grants = {k: set(v) for k, v in _grants(role).items()}
    assert grants == {k: set(v) for k, v in EXPECTED[function].items()}
    for label, actions in grants.items():
        assert not any(a == "*" or a.endswith(":*") for a in actions), (label, actions)


@pytest.mark.parametrize("function", sorted(EXPECTED))
def test_only_the_needed_managed_policies_are_attached(transformed: dict[str, Any], function: str) -> None:
    """Basic execution (logs) for all; the poller policies only for stream / queue consumers; no X-Ray
    (tracing is off unless QBSYNC_TRACING and Tracing: Active are set together)."""
    role = _roles(transformed)[function]
    assert set(role["Properties"].get("ManagedPolicyArns", [])) == MANAGED.get(function, {BASIC})


def test_no_inline_statement_has_a_star_resource_or_a_secret_outside_its_prefixes(transformed: dict[str, Any]) -> None:
    for function, role in _roles(transformed).items():
        for policy in role["Properties"].get("Policies", []):
            for st in policy["PolicyDocument"]["Statement"]:
                resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
                for r in map(_render, resources):
                    assert r != "*", function
                    if ":secretsmanager:" in r:
                        assert r.endswith(("secret:${SecretsPrefix}/tenants/*", "secret:${SecretsPrefix}/realms/*")), r


def test_only_stream_consumers_may_read_the_stream(transformed: dict[str, Any]) -> None:
    consumers = {
        name
        for name, res in load_template()["Resources"].items()
        if any(e.get("Type") == "DynamoDB" for e in res.get("Properties", {}).get("Events", {}).values())
    }
    readers = {f for f, role in _roles(transformed).items() if "stream" in _grants(role)}
    assert readers == consumers == {"SyncWorkerFunction", "QboChangeWorkerFunction"}


# ---------------------------------------------------------------- the webhook's grant vs its real calls
# TransactWriteItems / TransactGetItems have no IAM action of their own: each item is authorised as its
# Put / Update / Delete / ConditionCheck (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/
# transaction-apis-iam.html).
_TRANSACT = {"TransactWriteItems": {"dynamodb:PutItem", "dynamodb:ConditionCheckItem"}}


@pytest.fixture
def recorded_calls(webhook: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every DynamoDB operation any botocore client makes (pynamodb builds its own sessions)."""
    from botocore.client import BaseClient

    calls: list[str] = []
    original = BaseClient._make_api_call

    def record(self: Any, operation: str, params: Any) -> Any:
        if self.meta.service_model.service_name == "dynamodb":
            calls.append(operation)
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", record)
    return calls


def test_the_webhook_makes_only_calls_its_role_allows(recorded_calls: list[str], post: Any, tenant: Any) -> None:
    """Accepted single event, accepted batch (transaction), replay of each (read-back of stored hashes),
    a 409, a bad signature (forced re-read), an unknown tenant: every DynamoDB call is granted."""
    single = b.appointment_completed(tenant_id=tenant.tenant_id)
    batch = b.batch(*(b.appointment_completed(tenant_id=tenant.tenant_id) for _ in range(3)))
    answers = [post(single), post(batch), post(single), post(batch)]
    answers.append(post({**single, "version": 9}))
    answers.append(post(single, secret="wrong"))
    answers.append(post(single, tenant_id=b.new_id("ghost")))
    assert [a.status for a in answers] == [202, 202, 202, 202, 409, 401, 404]
    made = set()
    for op in recorded_calls:
        made |= _TRANSACT.get(op, {f"dynamodb:{op}"})
    assert made, "the hook saw the handler's calls"
    assert made <= INGEST_TABLE, json.dumps(sorted(made - INGEST_TABLE))
