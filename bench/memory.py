"""Peak memory of the sync worker handling full stream batches (``make bench ARGS="--only sync_memory"``).

Lambda bills and limits a function by its process's peak memory, so the batches run in a process of their own.
The local system is started (DynamoDB Local, moto, the QBO emulator with Intuit's limits), a tenant is onboarded
and a clinic's week is posted through the real webhook route while the stream pollers are held. The sync worker's
stream is then read as its event source mapping reads it (the template's filter), and
``functions.sync_worker.handler`` handles the event records in batches of ``batch_size`` (100), each in a fresh
Python process; then, once those events made their objects dirty, one batch of dirty-object records (the
reconcile path: QuickBooks writes; a realm's share per invocation still applies). The same again at the
template's batch size (500). Each child reports its peak RSS (``VmHWM``), the peak after the import alone, the
handler's time and its partial-failure count; the biggest event batch is reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import Options, benchmark
from bench.ingest import ROOT

FUNCTION = "SyncWorkerFunction"

CHILD = r"""
import json, sys, time, uuid
# VmHWM: this program's peak. (ru_maxrss would also count the parent's memory, carried over by fork + exec.)
rss = lambda: next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
from functions.sync_worker.handler import lambda_handler
after_import = rss()

class Context:  # what Powertools reads from Lambda's context (no import of the local stack: it would count)
    function_name, function_version, memory_limit_in_mb = "SyncWorkerFunction", "$LATEST", 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:SyncWorkerFunction"
    aws_request_id, log_group_name, log_stream_name = str(uuid.uuid4()), "/aws/lambda/SyncWorkerFunction", "local"
    deadline = time.time() + 900
    def get_remaining_time_in_millis(self):
        return int((self.deadline - time.time()) * 1000)

event = json.load(open(sys.argv[1]))
t = time.perf_counter()
result = lambda_handler(event, Context())
# To a file: on stdout the figures could interleave with a log line from one of the handler's threads.
json.dump({"rss_mb": rss(), "import_rss_mb": after_import, "seconds": time.perf_counter() - t,
           "failures": len((result or {}).get("batchItemFailures", []))}, open(sys.argv[2], "w"))
"""


def _poller(system: Any) -> Any:
    """The local event source mapping of the sync worker's stream."""
    return next(p for p in system.stack.pollers if getattr(p, "spec", None) and p.spec.function_id == FUNCTION)


def _stream_records(system: Any) -> list[dict[str, Any]]:
    """Every record on the sync worker's stream so far, as Lambda delivers them, that its filter lets through."""
    from infra.local.filters import matches_any
    from infra.local.streams import lambda_record

    stack, poller = system.stack, _poller(system)
    streams = stack.client("dynamodbstreams")
    out: list[dict[str, Any]] = []
    for shard in streams.describe_stream(StreamArn=poller.stream_arn)["StreamDescription"]["Shards"]:
        it = streams.get_shard_iterator(
            StreamArn=poller.stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while it:
            resp = streams.get_records(ShardIterator=it, Limit=1000)
            for raw in resp["Records"]:
                record = lambda_record(raw, poller.stream_arn, stack.region)
                if matches_any(poller.spec.filters, record):
                    out.append(record)
            if not resp["Records"]:
                break
            it = resp.get("NextShardIterator")
    return out


def _run_child(env: dict[str, str], records: list[dict[str, Any]]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"Records": records}, f)
    figures = Path(f"{f.name}.out")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, f.name, str(figures)],
            check=False,
            env={**env, "PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "POWERTOOLS_LOG_LEVEL": "ERROR"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            errors="replace",  # the child's own output is read for its error only
            timeout=900,
        )
        if proc.returncode:
            raise RuntimeError(f"sync worker child failed: {proc.stderr.strip().splitlines()[-1:]}")
        return dict(json.loads(figures.read_text()))
    finally:
        Path(f.name).unlink()
        figures.unlink(missing_ok=True)


def _measure(system: Any, size: int) -> dict[str, Any]:
    from infra.demo.run import onboard, post_events
    from infra.demo.scenario import pt_week

    assert system.stack is not None
    tid = f"memory-clinic-{size}"
    realm, secret = onboard(system, tid, f"Memory PT {size}")
    sc = pt_week(tid, appointments=size, patients=max(10, size // 5), seed=5, phi=True, copays=True)

    def mine(kind: str) -> list[dict[str, Any]]:
        return [
            r
            for r in _stream_records(system)
            if r["dynamodb"]["NewImage"]["rtype"]["S"] == kind
            and r["dynamodb"]["NewImage"].get("tenant_id", {}).get("S") == tid
        ]

    with system.stack.paused():
        post_events(system.api_url, tid, secret, sc.events, batch_size=50)
        events = mine("event")
        runs = [_run_child(system.stack.env, events[i : i + size]) for i in range(0, len(events), size)]
        first = max(runs, key=lambda r: r["rss_mb"])  # each batch in its own process, as a cold container
        dirty = [r for r in mine("object") if r["dynamodb"]["NewImage"].get("dirty", {}).get("BOOL")]
        latest = list({r["dynamodb"]["Keys"]["pk"]["S"]: r for r in dirty}.values())[:size]  # newest per object
        second = _run_child(system.stack.env, latest)
    qbo = system.control.stats(realm)
    return {
        **{f"events_batch_{k}": round(v, 2) for k, v in first.items()},
        "events_batches": len(runs),
        "events_records": len(events),
        **{f"reconcile_batch_{k}": round(v, 2) for k, v in second.items()},
        "reconcile_batch_records": len(latest),
        "qbo_requests": qbo.get("requests", 0),
        "qbo_batch_calls": qbo.get("batch", 0),
        "peak_rss_mb": round(max(first["rss_mb"], second["rss_mb"]), 1),
    }


@benchmark("sync_memory", group="coldstart", summary="sync worker peak RSS per stream batch (100; the template's)")
def sync_memory(opts: Options) -> dict[str, Any]:
    from infra.local.system import LocalSystem

    started = time.perf_counter()
    out: dict[str, Any] = {}
    with LocalSystem(schedules_enabled=False, emulator_limits=True, quiet=True) as system:
        assert system.stack is not None
        template_size = _poller(system).spec.batch_size
        for size in dict.fromkeys((opts.batch_size, template_size)):
            out.update({f"b{size}_{k}": v for k, v in _measure(system, size).items()})
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out
