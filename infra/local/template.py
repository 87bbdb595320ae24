"""Load a SAM template, transform it with aws-sam-translator and describe its wiring as dataclasses.

The transformed (plain CloudFormation) template is the single source of wiring for the local stack: tables,
queues, secrets, functions, API routes, event source mappings and schedules are all read from it here, so
nothing about wiring is repeated in Python. Intrinsics are resolved later by :class:`Resolver`, once the
emulated resources exist and have physical names, ARNs and URLs.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NO_VALUE = object()
PLACEHOLDER_CODE_URI = "s3://qbsync-local-code/code.zip"


class TemplateError(Exception):
    """The template cannot be loaded, transformed or understood by the local stack."""


class _StubPolicyLoader:
    """The real managed-policy loader calls IAM; locally the policy ARNs do not matter."""

    def load(self) -> dict[str, str]:
        return {}


@dataclass
class TableSpec:
    logical_id: str
    key_schema: list[dict[str, Any]]
    attribute_definitions: list[dict[str, Any]]
    billing_mode: str = "PAY_PER_REQUEST"
    global_indexes: list[dict[str, Any]] = field(default_factory=list)
    local_indexes: list[dict[str, Any]] = field(default_factory=list)
    stream_view_type: str | None = None
    ttl_attribute: str | None = None
    provisioned: dict[str, Any] | None = None


@dataclass
class QueueSpec:
    logical_id: str
    fifo: bool
    attributes: dict[str, Any]
    dead_letter_id: str | None = None
    max_receive_count: int | None = None

    @property
    def name(self) -> str:
        return self.logical_id + (".fifo" if self.fifo else "")


@dataclass
class SecretSpec:
    logical_id: str
    name: Any
    secret_string: Any = None
    generate: dict[str, Any] | None = None


@dataclass
class ParameterSpec:
    """An AWS::SSM::Parameter (string parameters only)."""

    logical_id: str
    name: Any
    value: Any


@dataclass
class FunctionSpec:
    logical_id: str
    handler: str
    code_dir: Path
    timeout_s: int = 3
    memory_mb: int = 128
    runtime: str = "python3.11"
    environment: dict[str, Any] = field(default_factory=dict)


@dataclass
class RouteSpec:
    api_id: str
    kind: str  # "rest" (API Gateway v1) or "http" (API Gateway v2)
    payload_version: str  # "1.0" or "2.0"
    method: str  # upper case, or "ANY"
    path: str  # "/v1/items/{item_id}", "/files/{proxy+}" or "$default"
    function_id: str
    stage: str


@dataclass
class EventSourceSpec:
    logical_id: str
    function_id: str
    source_kind: str  # "dynamodb" or "sqs"
    source_id: str  # logical id of the table or queue
    batch_size: int
    starting_position: str = "TRIM_HORIZON"
    filters: list[dict[str, Any]] = field(default_factory=list)
    report_batch_item_failures: bool = False
    maximum_retry_attempts: int = -1  # -1: retry until the record expires (Lambda's default for streams)
    bisect_on_error: bool = False
    on_failure_id: str | None = None  # logical id of the SQS queue receiving on-failure records
    batching_window_s: float = 0.0
    enabled: bool = True
    parallelization_factor: int = 1  # streams: concurrent batches per shard, records split by partition key


@dataclass
class ScheduleSpec:
    logical_id: str
    kind: str  # "rule" (AWS::Events::Rule) or "scheduler" (AWS::Scheduler::Schedule)
    expression: str
    function_id: str
    input: Any = None  # JSON text or None
    enabled: bool = True


@dataclass
class TemplateModel:
    path: Path
    root: Path
    raw: dict[str, Any]
    parameters: dict[str, Any]
    conditions: dict[str, bool]
    code_uris: dict[str, str]
    tables: dict[str, TableSpec] = field(default_factory=dict)
    queues: dict[str, QueueSpec] = field(default_factory=dict)
    secrets: dict[str, SecretSpec] = field(default_factory=dict)
    ssm_parameters: dict[str, ParameterSpec] = field(default_factory=dict)
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    routes: list[RouteSpec] = field(default_factory=list)
    event_sources: dict[str, EventSourceSpec] = field(default_factory=dict)
    schedules: dict[str, ScheduleSpec] = field(default_factory=dict)

    @property
    def resources(self) -> dict[str, Any]:
        return dict(self.raw.get("Resources", {}))

    def resource_type(self, logical_id: str) -> str | None:
        res = self.raw.get("Resources", {}).get(logical_id)
        return res.get("Type") if res else None


def load_template(
    path: str | os.PathLike[str], parameters: dict[str, Any] | None = None, region: str | None = None
) -> TemplateModel:
    """Read, SAM-transform and model the template at ``path``.

    Raises TemplateError when the file is not a template the translator accepts.
    """
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    tpl_path = Path(path).resolve()
    try:
        tpl = yaml_parse(tpl_path.read_text())
    except Exception as exc:
        raise TemplateError(f"cannot parse {tpl_path}: {exc}") from exc
    root = tpl_path.parent
    code_uris = _rewrite_code_uris(tpl)
    params = _parameter_values(tpl, parameters or {})
    os.environ.setdefault("AWS_DEFAULT_REGION", region or "us-east-1")
    try:
        transformed = transform(tpl, dict(parameters or {}), _StubPolicyLoader())
    except Exception as exc:
        raise TemplateError(f"SAM transform of {tpl_path} failed: {exc}") from exc
    model = TemplateModel(
        path=tpl_path, root=root, raw=transformed, parameters=params, conditions={}, code_uris=code_uris
    )
    model.conditions = _evaluate_conditions(transformed, params, region or os.environ["AWS_DEFAULT_REGION"])
    _build(model)
    return model


def _rewrite_code_uris(tpl: dict[str, Any]) -> dict[str, str]:
    """Swap local CodeUri values for an S3 URI (the translator insists) and remember the originals."""
    originals: dict[str, str] = {}
    glob_fn = tpl.get("Globals", {}).get("Function", {})
    default_uri = glob_fn.get("CodeUri")
    if isinstance(default_uri, str) and not default_uri.startswith("s3://"):
        glob_fn["CodeUri"] = PLACEHOLDER_CODE_URI
    for logical_id, res in tpl.get("Resources", {}).items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        props = res.setdefault("Properties", {})
        uri = props.get("CodeUri", default_uri)
        if props.get("InlineCode") is not None:
            continue
        originals[logical_id] = uri if isinstance(uri, str) and not uri.startswith("s3://") else "."
        props["CodeUri"] = PLACEHOLDER_CODE_URI
    return originals


def _parameter_values(tpl: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, spec in tpl.get("Parameters", {}).items():
        value = overrides.get(name, spec.get("Default", ""))
        if spec.get("Type") == "CommaDelimitedList" and isinstance(value, str):
            value = [v.strip() for v in value.split(",")] if value else []
        values[name] = value
    return values


def _evaluate_conditions(tpl: dict[str, Any], params: dict[str, Any], region: str) -> dict[str, bool]:
    conds = tpl.get("Conditions", {})
    results: dict[str, bool] = {}
    pseudo = {"AWS::Region": region, "AWS::Partition": "aws", "AWS::StackName": "qbsync-local"}

    def value(v: Any) -> Any:
        if isinstance(v, dict) and "Ref" in v:
            return params.get(v["Ref"], pseudo.get(v["Ref"], v["Ref"]))
        return v

    def ev(c: Any) -> bool:
        if isinstance(c, dict):
            if "Fn::Equals" in c:
                a, b = c["Fn::Equals"]
                return str(value(a)) == str(value(b))
            if "Fn::Not" in c:
                return not ev(c["Fn::Not"][0])
            if "Fn::And" in c:
                return all(ev(x) for x in c["Fn::And"])
            if "Fn::Or" in c:
                return any(ev(x) for x in c["Fn::Or"])
            if "Condition" in c:
                return named(c["Condition"])
        return bool(c)

    def named(name: str) -> bool:
        if name not in results:
            results[name] = ev(conds[name])
        return results[name]

    for name in conds:
        named(name)
    return results


def _active(model: TemplateModel, res: dict[str, Any]) -> bool:
    cond = res.get("Condition")
    return cond is None or model.conditions.get(cond, True)


def target_id(value: Any) -> str | None:
    """The logical id a Ref / GetAtt / single-reference Sub points at (e.g. an EventSourceArn)."""
    if isinstance(value, dict):
        if "Ref" in value:
            return str(value["Ref"])
        if "Fn::GetAtt" in value:
            ga = value["Fn::GetAtt"]
            return str(ga[0] if isinstance(ga, list) else ga.split(".", 1)[0])
        if "Fn::Sub" in value:
            text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
            refs = [m for m in re.findall(r"\$\{([^}!]+)\}", text) if not m.startswith("AWS::")]
            return refs[0].split(".", 1)[0] if len(refs) == 1 else None
    return None


def _build(model: TemplateModel) -> None:
    resources = model.raw.get("Resources", {})
    stages = _stages(resources)
    for logical_id, res in resources.items():
        if not _active(model, res):
            continue
        kind = res.get("Type")
        props = res.get("Properties", {}) or {}
        if kind == "AWS::DynamoDB::Table":
            model.tables[logical_id] = _table(logical_id, props)
        elif kind == "AWS::SQS::Queue":
            model.queues[logical_id] = _queue(logical_id, props)
        elif kind == "AWS::SecretsManager::Secret":
            model.secrets[logical_id] = SecretSpec(
                logical_id,
                props.get("Name", logical_id),
                props.get("SecretString"),
                props.get("GenerateSecretString"),
            )
        elif kind == "AWS::SSM::Parameter":
            model.ssm_parameters[logical_id] = ParameterSpec(
                logical_id, props.get("Name", logical_id), props.get("Value", "")
            )
        elif kind == "AWS::Lambda::Function":
            model.functions[logical_id] = _function(model, logical_id, props)
        elif kind in ("AWS::ApiGateway::RestApi", "AWS::ApiGatewayV2::Api") and "Body" in props:
            model.routes.extend(_routes(logical_id, kind, props["Body"], stages))
        elif kind == "AWS::Lambda::EventSourceMapping":
            spec = _event_source(model, logical_id, props)
            if spec:
                model.event_sources[logical_id] = spec
        elif kind == "AWS::Events::Rule" and props.get("ScheduleExpression"):
            for i, tgt in enumerate(props.get("Targets", [])):
                fn = target_id(tgt.get("Arn"))
                if fn and resources.get(fn, {}).get("Type") == "AWS::Lambda::Function":
                    name = logical_id if i == 0 else f"{logical_id}.{tgt.get('Id', i)}"
                    model.schedules[name] = ScheduleSpec(
                        name,
                        "rule",
                        props["ScheduleExpression"],
                        fn,
                        tgt.get("Input"),
                        props.get("State", "ENABLED") == "ENABLED",
                    )
        elif kind == "AWS::Scheduler::Schedule":
            tgt = props.get("Target", {})
            fn = target_id(tgt.get("Arn"))
            if fn and resources.get(fn, {}).get("Type") == "AWS::Lambda::Function":
                model.schedules[logical_id] = ScheduleSpec(
                    logical_id,
                    "scheduler",
                    props["ScheduleExpression"],
                    fn,
                    tgt.get("Input"),
                    props.get("State", "ENABLED") == "ENABLED",
                )


def _table(logical_id: str, props: dict[str, Any]) -> TableSpec:
    stream = props.get("StreamSpecification") or {}
    ttl = props.get("TimeToLiveSpecification") or {}
    return TableSpec(
        logical_id=logical_id,
        key_schema=props["KeySchema"],
        attribute_definitions=props.get("AttributeDefinitions", []),
        billing_mode=props.get("BillingMode", "PROVISIONED" if "ProvisionedThroughput" in props else "PAY_PER_REQUEST"),
        global_indexes=copy.deepcopy(props.get("GlobalSecondaryIndexes", [])),
        local_indexes=copy.deepcopy(props.get("LocalSecondaryIndexes", [])),
        stream_view_type=stream.get("StreamViewType"),
        ttl_attribute=ttl.get("AttributeName") if _truthy(ttl.get("Enabled")) else None,
        provisioned=props.get("ProvisionedThroughput"),
    )


def _queue(logical_id: str, props: dict[str, Any]) -> QueueSpec:
    attrs = {
        k: v
        for k, v in props.items()
        if k
        in (
            "VisibilityTimeout",
            "MessageRetentionPeriod",
            "DelaySeconds",
            "ReceiveMessageWaitTimeSeconds",
            "MaximumMessageSize",
            "ContentBasedDeduplication",
            "DeduplicationScope",
            "FifoThroughputLimit",
        )
    }
    redrive = props.get("RedrivePolicy") or {}
    if isinstance(redrive, str):
        redrive = json.loads(redrive)
    return QueueSpec(
        logical_id=logical_id,
        fifo=_truthy(props.get("FifoQueue")),
        attributes=attrs,
        dead_letter_id=target_id(redrive.get("deadLetterTargetArn")) if redrive else None,
        max_receive_count=int(redrive["maxReceiveCount"]) if redrive.get("maxReceiveCount") else None,
    )


def _function(model: TemplateModel, logical_id: str, props: dict[str, Any]) -> FunctionSpec:
    code_uri = model.code_uris.get(logical_id, ".")
    return FunctionSpec(
        logical_id=logical_id,
        handler=props.get("Handler", ""),
        code_dir=(model.root / code_uri).resolve(),
        timeout_s=int(props.get("Timeout", 3)),
        memory_mb=int(props.get("MemorySize", 128)),
        runtime=str(props.get("Runtime", "python3.11")),
        environment=dict((props.get("Environment") or {}).get("Variables") or {}),
    )


def _stages(resources: dict[str, Any]) -> dict[str, str]:
    stages: dict[str, str] = {}
    for res in resources.values():
        props = res.get("Properties", {}) or {}
        if res.get("Type") == "AWS::ApiGateway::Stage":
            api = target_id(props.get("RestApiId"))
        elif res.get("Type") == "AWS::ApiGatewayV2::Stage":
            api = target_id(props.get("ApiId"))
        else:
            continue
        if api and isinstance(props.get("StageName"), str):
            stages.setdefault(api, props["StageName"])
    return stages


_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "x-amazon-apigateway-any-method")


def _routes(api_id: str, kind: str, body: dict[str, Any], stages: dict[str, str]) -> list[RouteSpec]:
    api_kind = "rest" if kind == "AWS::ApiGateway::RestApi" else "http"
    routes: list[RouteSpec] = []
    for path, ops in (body.get("paths") or {}).items():
        for method, op in (ops or {}).items():
            if method not in _METHODS or not isinstance(op, dict):
                continue
            integ = op.get("x-amazon-apigateway-integration") or {}
            if integ.get("type", "").lower() != "aws_proxy":
                continue
            fn = _function_from_uri(integ.get("uri"))
            if not fn:
                continue
            default_version = "1.0" if api_kind == "rest" else "2.0"
            routes.append(
                RouteSpec(
                    api_id=api_id,
                    kind=api_kind,
                    payload_version=str(integ.get("payloadFormatVersion", default_version)),
                    method="ANY" if method == "x-amazon-apigateway-any-method" else method.upper(),
                    path=path,
                    function_id=fn,
                    stage=stages.get(api_id, "Prod" if api_kind == "rest" else "$default"),
                )
            )
    return routes


def _function_from_uri(uri: Any) -> str | None:
    text = uri.get("Fn::Sub") if isinstance(uri, dict) else uri
    if isinstance(text, list):
        text = text[0]
    if not isinstance(text, str):
        return None
    m = re.search(r"\$\{([A-Za-z0-9]+)\.Arn\}", text) or re.search(r":function:([A-Za-z0-9_-]+)", text)
    return m.group(1) if m else None


def _event_source(model: TemplateModel, logical_id: str, props: dict[str, Any]) -> EventSourceSpec | None:
    resources = model.raw["Resources"]
    source = target_id(props.get("EventSourceArn"))
    source_type = resources.get(source, {}).get("Type") if source else None
    if source_type == "AWS::DynamoDB::Table":
        kind = "dynamodb"
    elif source_type == "AWS::SQS::Queue":
        kind = "sqs"
    else:
        return None
    fn = target_id(props.get("FunctionName"))
    if not fn:
        return None
    filters = []
    for f in (props.get("FilterCriteria") or {}).get("Filters", []):
        pattern = f.get("Pattern")
        filters.append(json.loads(pattern) if isinstance(pattern, str) else pattern)
    on_failure = ((props.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
    on_failure_id = target_id(on_failure)
    if on_failure_id is None and isinstance(on_failure, str):
        name = on_failure.rsplit(":", 1)[-1]
        on_failure_id = next((q.logical_id for q in model.queues.values() if q.name == name), None)
    return EventSourceSpec(
        logical_id=logical_id,
        function_id=fn,
        source_kind=kind,
        source_id=str(source),
        batch_size=int(props.get("BatchSize", 100 if kind == "dynamodb" else 10)),
        starting_position=str(props.get("StartingPosition", "TRIM_HORIZON")),
        filters=filters,
        report_batch_item_failures="ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
        maximum_retry_attempts=int(props.get("MaximumRetryAttempts", -1)),
        bisect_on_error=_truthy(props.get("BisectBatchOnFunctionError")),
        on_failure_id=on_failure_id,
        batching_window_s=float(props.get("MaximumBatchingWindowInSeconds", 0)),
        enabled=_truthy(props.get("Enabled", True)),
        parallelization_factor=int(props.get("ParallelizationFactor", 1)),
    )


def _truthy(v: Any) -> bool:
    return v is True or (isinstance(v, str) and v.lower() == "true")


class Resolver:
    """Resolves CloudFormation intrinsics against the physical values of the local resources.

    ``refs`` maps a logical id to its Ref value; ``attrs`` maps (logical id, attribute) to its GetAtt value.
    Unknown references resolve to a recognisable placeholder rather than failing, so templates with
    resources the local stack does not emulate (roles, alarms) still load.
    """

    def __init__(
        self,
        model: TemplateModel,
        region: str,
        account_id: str,
        refs: dict[str, Any] | None = None,
        attrs: dict[tuple[str, str], Any] | None = None,
    ) -> None:
        self.model = model
        self.region = region
        self.account_id = account_id
        self.refs = refs if refs is not None else {}
        self.attrs = attrs if attrs is not None else {}

    def pseudo(self, name: str) -> Any:
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::StackName": "qbsync-local",
            "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{self.account_id}:stack/qbsync-local",
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": NO_VALUE,
            "AWS::NotificationARNs": [],
        }.get(name)

    def ref(self, name: str) -> Any:
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if name in self.model.parameters:
            return self.model.parameters[name]
        if name in self.refs:
            return self.refs[name]
        return name

    def getatt(self, logical_id: str, attr: str) -> Any:
        if (logical_id, attr) in self.attrs:
            return self.attrs[(logical_id, attr)]
        kind = (self.model.resource_type(logical_id) or "x::x::x").split("::")
        return f"arn:aws:{kind[1].lower()}:{self.region}:{self.account_id}:{logical_id}/{attr}"

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            out = [self.resolve(v) for v in value]
            return [v for v in out if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                parts = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.getatt(self.resolve(parts[0]), self.resolve(parts[1]))
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::Join":
                sep, items = arg
                return str(sep).join(str(x) for x in self.resolve(items))
            if key == "Fn::Select":
                idx, items = arg
                return self.resolve(items)[int(self.resolve(idx))]
            if key == "Fn::Split":
                sep, text = arg
                return str(self.resolve(text)).split(sep)
            if key == "Fn::If":
                name, yes, no = arg
                return self.resolve(yes if self.model.conditions.get(name, False) else no)
            if key == "Fn::FindInMap":
                m, k1, k2 = (self.resolve(x) for x in arg)
                return self.resolve(self.model.raw.get("Mappings", {})[m][k1][k2])
            if key == "Fn::Base64":
                import base64

                return base64.b64encode(str(self.resolve(arg)).encode()).decode()
            if key == "Fn::GetAZs":
                return [f"{self.region}a", f"{self.region}b", f"{self.region}c"]
            if key == "Fn::ImportValue":
                return f"imported:{self.resolve(arg)}"
            if key == "Fn::ToJsonString":
                return json.dumps(self.resolve(arg))
        out = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not NO_VALUE}

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], {k: self.resolve(v) for k, v in arg[1].items()}
        else:
            text, variables = arg, {}

        def repl(m: re.Match[str]) -> str:
            name = m.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                logical_id, attr = name.split(".", 1)
                return str(self.getatt(logical_id, attr))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}]+)\}", repl, text)
