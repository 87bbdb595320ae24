"""qbsync benchmarks: ``python -m bench`` (``make bench``) runs every registered benchmark, prints a table and
writes ``bench/results/<group>.json``.

Add a benchmark by decorating a function in a module listed in ``MODULES``::

    @benchmark("ingest_throughput", group="ingest", summary="...")
    def run(opts: Options) -> dict[str, Any]: ...   # returns flat, JSON-compatible figures
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Modules that register benchmarks (imported by ``python -m bench``); later ones add per-realm throughput etc.
MODULES: tuple[str, ...] = (
    "bench.ingest",
    "bench.coldstart",
    "bench.memory",
    "bench.baseline",
    "bench.throughput",
    "bench.fairness",
)


@dataclass(frozen=True)
class Options:
    events: int = 10_000
    batch_size: int = 100
    repeats: int = 5
    quick: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Benchmark:
    name: str
    group: str
    summary: str
    run: Callable[[Options], dict[str, Any]]


REGISTRY: dict[str, Benchmark] = {}


def benchmark(name: str, *, group: str, summary: str) -> Callable[[Callable[[Options], dict[str, Any]]], Any]:
    def register(fn: Callable[[Options], dict[str, Any]]) -> Callable[[Options], dict[str, Any]]:
        REGISTRY[name] = Benchmark(name=name, group=group, summary=summary, run=fn)
        return fn

    return register
