"""Ingest benchmarks: the booking-webhook function's import time (a cold-start proxy) and its throughput."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import Options, benchmark

ROOT = Path(__file__).resolve().parents[1]
HANDLER_MODULE = "functions.booking_webhook.handler"
ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    "LEDGER_TABLE": "LedgerTable",
    "SECRETS_PREFIX": "qbsync",
    "POWERTOOLS_SERVICE_NAME": "qbsync",
    "POWERTOOLS_METRICS_NAMESPACE": "qbsync",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "QBSYNC_TRACING": "false",
}


def _median_import_ms(statement: str, repeats: int) -> float:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **ENV}
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], env=env, cwd=ROOT, check=True, capture_output=True)
        if i:  # the first run warms the OS file cache and .pyc files
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


@benchmark("ingest_import", group="ingest", summary="wall time of importing the handler vs boto3 (median)")
def import_time(opts: Options) -> dict[str, Any]:
    baseline = _median_import_ms("pass", opts.repeats)
    boto3_ms = _median_import_ms("import boto3", opts.repeats)
    handler_ms = _median_import_ms(f"import {HANDLER_MODULE}", opts.repeats)
    return {
        "python_startup_ms": round(baseline, 1),
        "import_boto3_ms": round(boto3_ms, 1),
        "import_handler_ms": round(handler_ms, 1),
        "handler_to_boto3_ratio": round(handler_ms / boto3_ms, 2),
        "handler_to_boto3_ratio_net_of_startup": round((handler_ms - baseline) / (boto3_ms - baseline), 2),
    }


@contextmanager
def _ledger_backend() -> Iterator[str]:
    """DynamoDB Local (when java and ``make ddb-local``'s jar are there) or moto server for DynamoDB, moto
    server for Secrets Manager; the ledger table from template.yaml. Yields the backend's description.

    Not in-process moto: it deep-copies the whole table for every item of a transaction, which would
    measure moto (seconds per 100-event batch) rather than the handler.
    """
    from infra.local.aws import DynamoDBLocal, MotoServer, client, find_ddb_local_jar
    from infra.template_check import load_template

    saved = dict(os.environ)
    moto = MotoServer().start()
    ddb: DynamoDBLocal | None = None
    jar = find_ddb_local_jar(ROOT)
    try:
        if jar is not None and shutil.which("java"):
            ddb = DynamoDBLocal(jar).start("us-east-1")
        ddb_url = ddb.url if ddb else moto.url
        os.environ.update(ENV)
        os.environ.update({"AWS_ENDPOINT_URL_DYNAMODB": ddb_url, "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto.url})
        props = load_template()["Resources"]["LedgerTable"]["Properties"]
        client("dynamodb", ddb_url, "us-east-1").create_table(
            TableName="LedgerTable",
            AttributeDefinitions=props["AttributeDefinitions"],
            KeySchema=props["KeySchema"],
            GlobalSecondaryIndexes=props["GlobalSecondaryIndexes"],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, **props["StreamSpecification"]},
        )
        _reset()
        yield ("DynamoDB Local" if ddb else "moto server") + " (DynamoDB) + moto server (Secrets Manager)"
    finally:
        _reset()
        os.environ.clear()
        os.environ.update(saved)
        if ddb is not None:
            ddb.stop()
        moto.stop()


def _reset() -> None:
    from shared.adapters import dynamo, secrets
    from shared.config import reset_settings_cache

    reset_settings_cache()
    dynamo.reset_binding()
    secrets.reset_client()
    sys.modules.pop(HANDLER_MODULE, None)


def _requests(tenant_id: str, secret: str, opts: Options) -> list[dict[str, Any]]:
    from tests import builders as b

    kinds = (b.appointment_completed, b.payment_collected, b.patient_upserted, b.credit_issued)
    events = [kinds[i % len(kinds)](tenant_id=tenant_id) for i in range(opts.events)]
    out = []
    for i in range(0, len(events), opts.batch_size):
        body = b.to_body(b.batch(*events[i : i + opts.batch_size]))
        out.append(b.api_gateway_event("POST", "/v1/events", body, b.signed_headers(body, tenant_id, secret)))
    return out


@benchmark(
    "ingest_throughput",
    group="ingest",
    summary="events through the real handler in batches of 100 against a local DynamoDB (one process, serial)",
)
def throughput(opts: Options) -> dict[str, Any]:
    import importlib

    from tests import builders as b

    with _ledger_backend() as backend:
        from shared.services.tenants import create_tenant

        created = create_tenant("bench-clinic", "Bench Clinic")
        handler = importlib.import_module(HANDLER_MODULE)
        reqs = _requests("bench-clinic", created.signing_secret, opts)
        latencies: list[float] = []
        start = time.perf_counter()
        for event in reqs:
            t0 = time.perf_counter()
            resp = handler.lambda_handler(event, b.lambda_context())
            latencies.append((time.perf_counter() - t0) * 1000)
            if resp["statusCode"] != 202:
                raise RuntimeError(f"bench request answered {resp['statusCode']}: {resp['body'][:200]}")
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "events": opts.events,
        "requests": len(reqs),
        "seconds": round(elapsed, 2),
        "events_per_s": round(opts.events / elapsed, 1),
        "p50_ms_per_request": round(latencies[len(latencies) // 2], 1),
        "p99_ms_per_request": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
        "backend": backend,
    }
