"""Cold start per function: import time as a ratio to bare ``import boto3``, peak memory, and which heavy
optional libraries each function loads (intuit-oauth only in the OAuth function, X-Ray nowhere)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench import Options, benchmark
from bench.ingest import ENV, ROOT

# intuitlib itself is a namespace stub that intuit-oauth's .pth registers at start-up: check its client module.
HEAVY = ("intuitlib.client", "aws_xray_sdk", "requests", "matplotlib", "quickbooks")
# Peak RSS is the child's VmHWM: ru_maxrss would report the parent's size (carried over by fork + exec).
PROBE = (
    "import sys, time; t=time.perf_counter(); import {module} as m; "
    "dt=(time.perf_counter()-t)*1000; import json; "
    "hwm=next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')); "
    "print(json.dumps({{'ms': dt, 'rss_mb': hwm/1024, "
    "'heavy': sorted(h for h in {heavy!r} if h in sys.modules)}}))"
)


def _functions() -> dict[str, str]:
    from infra.template_check import load_template

    tpl = load_template()
    return {
        name: res["Properties"]["Handler"].rsplit(".", 1)[0]
        for name, res in tpl["Resources"].items()
        if res["Type"] == "AWS::Serverless::Function"
    }


def _probe(module: str, repeats: int) -> dict[str, Any]:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **ENV}
    runs = []
    for i in range(repeats + 1):
        out = (
            subprocess.run(
                [sys.executable, "-c", PROBE.format(module=module, heavy=HEAVY)],
                env=env,
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        if i:  # the first run warms the file cache and .pyc files
            runs.append(json.loads(out))
    return {
        "ms": statistics.median(r["ms"] for r in runs),
        "rss_mb": max(r["rss_mb"] for r in runs),
        "heavy": runs[-1]["heavy"],
    }


@benchmark("cold_start", group="coldstart", summary="per-function import time vs `import boto3`, peak RSS")
def cold_start(opts: Options) -> dict[str, Any]:
    started = time.perf_counter()
    boto3 = _probe("boto3", opts.repeats)
    out: dict[str, Any] = {"import_boto3_ms": round(boto3["ms"], 1), "boto3_rss_mb": round(boto3["rss_mb"], 1)}
    worst = 0.0
    for name, module in sorted(_functions().items()):
        try:
            p = _probe(module, opts.repeats)
        except subprocess.CalledProcessError as exc:
            out[f"{name}_error"] = (exc.stderr or "").strip().splitlines()[-1][:120]
            continue
        ratio = p["ms"] / boto3["ms"]
        worst = max(worst, ratio)
        out[f"{name}_ratio"] = round(ratio, 2)
        out[f"{name}_rss_mb"] = round(p["rss_mb"], 1)
        out[f"{name}_heavy_imports"] = ",".join(p["heavy"]) or "-"
    out["worst_ratio"] = round(worst, 2)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out
