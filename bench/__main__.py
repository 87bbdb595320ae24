"""``python -m bench [--only NAME ...] [--events N] [--quick] [--list]``: run benchmarks, print, save JSON.

Each benchmark runs in a fresh interpreter of its own (``--child``), one after another: the local stack runs
every handler in the benchmark's process, and a heap left by an earlier benchmark slowed a later one (measured:
the realm throughput benchmark after the ingest one, in one process, sustained 454.6 pairs/min against 558.1 on
its own; after all of them, 375.2). A Lambda container never inherits another function's heap either.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench import MODULES, REGISTRY, Options
from bench.baseline import versus

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names (default: all)")
    parser.add_argument("--events", type=int, default=10_000, help="events for throughput benchmarks")
    parser.add_argument("--quick", action="store_true", help="fewer repeats/events, for a smoke run")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--child", nargs=2, metavar=("NAME", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--modules", default=",".join(MODULES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for module in args.modules.split(","):
        importlib.import_module(module)
    if args.list:
        for b in REGISTRY.values():
            print(f"{b.name:24} {b.group:10} {b.summary}")
        return 0
    opts = Options(events=1_000 if args.quick else args.events, repeats=3 if args.quick else 5, quick=args.quick)
    if args.child:
        name, out = args.child
        Path(out).write_text(json.dumps(REGISTRY[name].run(opts), default=str))
        return 0
    unknown = sorted(set(args.only or ()) - set(REGISTRY))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)} (see --list)")
    selected = [b for b in REGISTRY.values() if args.only is None or b.name in args.only]
    by_group: dict[str, dict[str, Any]] = defaultdict(dict)
    rows: list[tuple[str, str, str]] = []
    failed = []
    for b in selected:
        print(f"running {b.name} ...", file=sys.stderr, flush=True)
        try:
            figures = _run_alone(b.name, args)
        except subprocess.CalledProcessError as e:  # its traceback is on stderr; the others still run and print
            failed.append(b.name)
            figures = {"error": f"exited with {e.returncode}"}
        by_group[b.group][b.name] = {"summary": b.summary, **figures}
        rows.extend((b.name, k, _fmt(v)) for k, v in figures.items() if not isinstance(v, dict | list))
    ratios = versus(by_group.get("throughput", {}))
    if ratios:
        by_group["throughput"]["qbsync_vs_baseline"] = {"summary": "qbsync ÷ naive baseline, this run", **ratios}
        rows.extend(("qbsync_vs_baseline", k, _fmt(v)) for k, v in ratios.items())
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    for group, results in by_group.items():
        path = RESULTS / f"{group}.json"
        path.write_text(json.dumps({"meta": meta, "options": vars(opts), **results}, indent=2, default=str) + "\n")
        print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}", file=sys.stderr)
    _table(rows)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _run_alone(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One benchmark in a fresh interpreter; its figures come back through a file (its stdout carries the local
    stack's logs)."""
    with tempfile.TemporaryDirectory(prefix="qbsync-bench-") as tmp:
        out = Path(tmp) / "figures.json"
        options = ["--modules", args.modules, "--events", str(args.events), *(["--quick"] if args.quick else [])]
        subprocess.run([sys.executable, "-m", "bench", "--child", name, str(out), *options], check=True, cwd=ROOT)
        figures: dict[str, Any] = json.loads(out.read_text())
        return figures


def _fmt(v: Any) -> str:
    return f"{v:,.3f}" if isinstance(v, float) else str(v)


def _table(rows: list[tuple[str, str, str]]) -> None:
    widths = [max(len(r[i]) for r in [("benchmark", "metric", "value"), *rows]) for i in range(3)]
    line = "  ".join("-" * w for w in widths)
    print("  ".join(h.ljust(w) for h, w in zip(("benchmark", "metric", "value"), widths, strict=True)))
    print(line)
    for r in rows:
        print(f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2].rjust(widths[2])}")


if __name__ == "__main__":
    raise SystemExit(main())
