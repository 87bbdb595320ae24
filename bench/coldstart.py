"""Cold start per function: import time as a ratio to bare ``import boto3``, peak memory, and which heavy
optional libraries each function loads (intuit-oauth only in the OAuth function, X-Ray nowhere).

Measured as deployed: a function's package holds ``requirements-lambda.txt`` and what those need, and the Lambda
runtime adds boto3. The development environment has more (moto, pytest...), and some libraries import what they
find: PyJWT, which intuit-oauth uses, loads ``cryptography`` when it is installed (moto brings it here; the
deployed OAuth function does not have it). So each probe process refuses the packages a deployed function would
not have, as if they were absent.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

from bench import Options, benchmark
from bench.ingest import ENV, ROOT

# intuitlib itself is a namespace stub that intuit-oauth's .pth registers at start-up: check its client module.
HEAVY = ("intuitlib.client", "aws_xray_sdk", "requests", "matplotlib", "quickbooks", "pydantic")
# Installed in the bench's environment but not in a deployed function: imports of these fail as if absent.
ABSENT = (
    "import sys\n"
    "class _Absent:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.partition('.')[0] in {absent!r}:\n"
    "            raise ModuleNotFoundError(f'No module named {{name!r}}', name=name)\n"
    "sys.meta_path.insert(0, _Absent())\n"
)
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


def _deployed_distributions() -> set[str]:
    """requirements-lambda.txt's distributions, boto3 (the runtime's), and everything they require."""
    from packaging.requirements import Requirement

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    lines = (ROOT / "requirements-lambda.txt").read_text().splitlines()
    todo = ["boto3", *(Requirement(ln).name for ln in lines if ln.strip() and not ln.startswith("#"))]
    seen: set[str] = set()
    while todo:
        name = norm(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for raw in importlib.metadata.requires(name) or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def absent_modules() -> list[str]:
    """Top-level modules of installed distributions that a deployed function does not have."""
    deployed = _deployed_distributions()
    return sorted(
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if module not in sys.stdlib_module_names
        and module not in ("shared", "functions")
        and not any(re.sub(r"[-_.]+", "-", d).lower() in deployed for d in dists)
    )


def _probe(module: str, absent: list[str]) -> dict[str, Any]:
    """One fresh interpreter importing ``module``: milliseconds, peak RSS and the heavy libraries it loaded."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **ENV}
    code = ABSENT.format(absent=frozenset(absent)) + PROBE.format(module=module, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@benchmark("cold_start", group="coldstart", summary="per-function import time vs `import boto3`, peak RSS")
def cold_start(opts: Options) -> dict[str, Any]:
    """Rounds of ``import boto3`` then each function's import, each in a fresh interpreter. The host's speed varies
    by a third from one run to the next (other tenants of the machine; the time is all CPU time), and the noise
    only ever adds time, so a function's ratio is its best time over boto3's best time (as ``timeit`` advises)."""
    started = time.perf_counter()
    absent = absent_modules()
    functions = sorted(_functions().items())
    out: dict[str, Any] = {}
    boto3: list[float] = []
    runs: dict[str, list[dict[str, Any]]] = {}
    for rnd in range(opts.repeats + 1):  # round 0 warms the file cache and the .pyc files
        base = _probe("boto3", absent)
        if rnd:
            boto3.append(base["ms"])
        for name, module in functions:
            if f"{name}_error" in out:
                continue
            try:
                p = _probe(module, absent)
            except subprocess.CalledProcessError as exc:
                out[f"{name}_error"] = (exc.stderr or "").strip().splitlines()[-1][:120]
                continue
            if rnd:
                runs.setdefault(name, []).append(p)
    out = {"import_boto3_ms": round(min(boto3), 1), **out}
    worst = 0.0
    for name, _ in functions:
        if name not in runs:
            continue
        ratio = min(r["ms"] for r in runs[name]) / min(boto3)
        worst = max(worst, ratio)
        out[f"{name}_ratio"] = round(ratio, 2)
        out[f"{name}_rss_mb"] = round(max(r["rss_mb"] for r in runs[name]), 1)
        out[f"{name}_heavy_imports"] = ",".join(runs[name][-1]["heavy"]) or "-"
    out["worst_ratio"] = round(worst, 2)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out
