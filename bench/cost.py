"""AWS cost of a benchmark run, from what the handlers actually called (list prices, us-east-1, on demand).

``AwsMeter`` wraps every botocore call in this process while it is active: DynamoDB data-plane calls are made
with ``ReturnConsumedCapacity=TOTAL`` so the read and write request units come from DynamoDB (Local) itself
(table and index writes, sized as AWS sizes them), except for ``TransactWriteItems``: DynamoDB Local's figure for a
transaction is not what AWS bills (measured: 40 puts of 2.5 KB reported as 12 units, 100 small updates as 8; AWS
bills 2 units per KB of every item in a transaction, 240 and 200). The meter prices each transaction itself
(``transaction_units``) from the items' sizes after the commit, read back outside the meter. SQS and Secrets
Manager calls are counted. Lambda requests and GB-seconds come from the local runtime's
per-function invocation counts and run times (wall time on a shared 2-core machine: an upper bound of what
Lambda would bill), API Gateway requests from the HTTP-triggered functions' invocations.

Left out: DynamoDB Streams reads (free when Lambda reads them), storage, CloudWatch Logs and metrics, the
fixed monthly Secrets Manager fee per secret, and data transfer.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from botocore.client import BaseClient
from botocore.exceptions import ClientError

# USD, us-east-1 list prices (on-demand DynamoDB after the November 2024 reduction; Lambda x86).
PRICES = {
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_s": 0.0000166667,
    "ddb_write_unit": 0.625 / 1e6,
    "ddb_read_unit": 0.125 / 1e6,
    "sqs_request": 0.40 / 1e6,
    "secrets_call": 0.05 / 1e4,
    "api_request": 3.50 / 1e6,  # REST API
}
READS = {"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"}
WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
HTTP_FUNCTIONS = ("BookingWebhookFunction", "QboWebhookFunction", "OpsApiFunction", "OAuthFunction")
# Lambda's SQS poller receives and deletes what a handler sends: about three requests per message.
SQS_REQUESTS_PER_SEND = 3


class AwsMeter:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.read_units = 0.0
        self.write_units = 0.0
        self.schemas: dict[str, tuple[list[str], list[str]]] = {}  # table -> its keys, its indexes' partition keys
        self._lock = threading.Lock()

    def _record(
        self, service: str, op: str, params: dict[str, Any], response: dict[str, Any] | None, units: float = 0.0
    ) -> None:
        units = units or sum(float(cc.get("CapacityUnits") or 0.0) for cc in _consumed(response))
        if service == "dynamodb" and op in WRITES | READS and not units:
            # A failed conditional write still costs its units; DynamoDB Local may omit the figure.
            units = _fallback_units(op, params)
        with self._lock:
            self.calls[f"{service}:{op}"] += 1
            if service == "dynamodb" and op in WRITES:
                self.write_units += units
            elif service == "dynamodb" and op in READS:
                self.read_units += units

    @contextmanager
    def active(self) -> Iterator[AwsMeter]:
        original = BaseClient._make_api_call
        meter = self

        def metered(client: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
            service = client.meta.service_model.service_name
            if service == "dynamodb" and operation_name in READS | WRITES:
                api_params = {**api_params, "ReturnConsumedCapacity": "TOTAL"}
            try:
                response = original(client, operation_name, api_params)
            except ClientError:
                meter._record(service, operation_name, api_params, None)
                raise
            units = 0.0
            if service == "dynamodb" and operation_name == "TransactWriteItems":
                tables = _Tables(client, original, meter.schemas)
                units = transaction_units(api_params["TransactItems"], tables)
            meter._record(service, operation_name, api_params, response, units)
            return response

        BaseClient._make_api_call = metered  # type: ignore[method-assign]
        try:
            yield self
        finally:
            BaseClient._make_api_call = original  # type: ignore[method-assign]

    def count(self, prefix: str) -> int:
        return sum(v for k, v in self.calls.items() if k.startswith(prefix))


def _consumed(response: dict[str, Any] | None) -> list[dict[str, Any]]:
    cc = (response or {}).get("ConsumedCapacity")
    if isinstance(cc, dict):
        return [cc]
    return list(cc or [])


def _fallback_units(op: str, params: dict[str, Any]) -> float:
    """One unit per item (two inside a transaction), for calls whose answer carried no ConsumedCapacity."""
    if op in ("TransactWriteItems", "TransactGetItems"):
        return 2.0 * len(params.get("TransactItems") or [])
    if op == "BatchWriteItem":
        return float(sum(len(v) for v in (params.get("RequestItems") or {}).values()))
    if op == "BatchGetItem":
        return float(sum(len(v.get("Keys", [])) for v in (params.get("RequestItems") or {}).values()))
    return 1.0


# An index entry holds the keys and the few projected attributes (template: KEYS_ONLY and INCLUDE lease_until),
# so one index write is one unit; AWS adds 100 bytes of overhead per index entry, still under 1 KB.
INDEX_WRITE_UNITS = 1.0


def transaction_units(transact_items: Sequence[Mapping[str, Any]], tables: _Tables) -> float:
    """Write units AWS bills for a committed ``TransactWriteItems``: 2 per KB (rounded up per item) of each item
    written, as it is after the commit (a Put's item as sent; an Update's read back; a Delete or ConditionCheck as
    1 KB), plus one unit per global secondary index the written item is in."""
    actions = [next(iter(entry.items())) for entry in transact_items]
    updated = tables.items([(body["TableName"], body["Key"]) for action, body in actions if action == "Update"])
    units = 0.0
    for action, body in actions:
        table = body["TableName"]
        item = body.get("Item") if action == "Put" else updated.get(tables.key_id(table, body["Key"]))
        units += 2 * max(1, math.ceil(item_size(item or {}) / 1024))
        if item:
            units += INDEX_WRITE_UNITS * sum(1 for key in tables.index_keys(table) if key in item)
    return units


def item_size(item: Mapping[str, Any]) -> int:
    """An item's size as DynamoDB counts it: attribute names plus values (``Item sizes and formats``)."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: Mapping[str, Any]) -> int:
    ((kind, v),) = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "B":
        return len(v)
    if kind == "N":
        return math.ceil(len(v.lstrip("-").replace(".", "").strip("0") or "0") / 2) + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(_value_size({kind[0]: x}) for x in v)
    if kind == "L":
        return 3 + sum(1 + _value_size(x) for x in v)
    return 3 + sum(1 + len(k.encode()) + _value_size(x) for k, x in v.items())  # M


class _Tables:
    """Reads tables' indexes and items outside the meter (``call`` is the unwrapped botocore call)."""

    def __init__(self, client: Any, call: Callable[..., Any], schemas: dict[str, tuple[list[str], list[str]]]) -> None:
        self._client, self._call, self._schemas = client, call, schemas

    def _schema(self, table: str) -> tuple[list[str], list[str]]:
        """The table's key attributes and its global secondary indexes' partition keys."""
        if table not in self._schemas:
            desc = self._call(self._client, "DescribeTable", {"TableName": table})["Table"]
            keys = [k["AttributeName"] for k in desc["KeySchema"]]
            gsis = desc.get("GlobalSecondaryIndexes", [])
            self._schemas[table] = (
                keys,
                [k["AttributeName"] for g in gsis for k in g["KeySchema"] if k["KeyType"] == "HASH"],
            )
        return self._schemas[table]

    def index_keys(self, table: str) -> list[str]:
        return self._schema(table)[1]

    def key_id(self, table: str, item: Mapping[str, Any]) -> str:
        return repr((table, [item[k] for k in self._schema(table)[0]]))

    def items(self, keys: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
        """The items at ``keys`` (table, key), by ``key_id``; one BatchGetItem per 100 keys."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), 100):
            request: dict[str, dict[str, Any]] = {}
            for table, key in keys[start : start + 100]:
                request.setdefault(table, {"Keys": [], "ConsistentRead": True})["Keys"].append(key)
            while request:
                got = self._call(self._client, "BatchGetItem", {"RequestItems": request})
                for table, items in got.get("Responses", {}).items():
                    for item in items:
                        found[self.key_id(table, item)] = item
                request = got.get("UnprocessedKeys") or {}
        return found


def cost_figures(
    meter: AwsMeter, runtime_stats: dict[str, dict[str, int]], memory_mb: dict[str, int], units: int
) -> dict[str, Any]:
    """Dollars per 1,000 ``units`` (synced visits), by service, plus the counts they come from."""
    invocations = runtime_stats.get("invocations", {})
    ms = runtime_stats.get("ms", {})
    gb_s = sum(ms.get(fn, 0) / 1000 * memory_mb.get(fn, 128) / 1024 for fn in invocations)
    lambda_requests = sum(invocations.values())
    api_requests = sum(invocations.get(fn, 0) for fn in HTTP_FUNCTIONS)
    sqs_sends = meter.count("sqs:SendMessage")  # SendMessage and SendMessageBatch
    secrets = meter.count("secretsmanager:")
    dollars = {
        "lambda": lambda_requests * PRICES["lambda_request"] + gb_s * PRICES["lambda_gb_s"],
        "dynamodb": meter.write_units * PRICES["ddb_write_unit"] + meter.read_units * PRICES["ddb_read_unit"],
        "sqs": sqs_sends * SQS_REQUESTS_PER_SEND * PRICES["sqs_request"],
        "secrets_manager": secrets * PRICES["secrets_call"],
        "api_gateway": api_requests * PRICES["api_request"],
    }
    per = 1000 / max(units, 1)
    out: dict[str, Any] = {f"usd_per_1000_visits_{k}": round(v * per, 5) for k, v in dollars.items()}
    out["usd_per_1000_visits"] = round(sum(dollars.values()) * per, 4)
    out["lambda_invocations_per_visit"] = round(lambda_requests / max(units, 1), 3)
    out["lambda_gb_s_per_visit"] = round(gb_s / max(units, 1), 4)
    out["ddb_write_units_per_visit"] = round(meter.write_units / max(units, 1), 2)
    out["ddb_read_units_per_visit"] = round(meter.read_units / max(units, 1), 2)
    out["secrets_calls_per_visit"] = round(secrets / max(units, 1), 4)
    return out
