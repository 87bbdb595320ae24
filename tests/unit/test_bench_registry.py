"""``make bench`` lists every benchmark the issue asks for (they run outside ``make test``: they are measurements)."""

from __future__ import annotations

import pytest

from bench.__main__ import main
from bench.fairness import _p


def test_every_benchmark_is_registered(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    names = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert {"realm_throughput", "realm_fairness", "ingest_throughput", "cold_start", "sync_memory"} <= names, names


def test_percentile_is_nearest_rank_from_below() -> None:
    assert _p([], 0.95) == 0.0
    assert _p([3.0, 1.0, 2.0], 0.5) == 2.0
    assert _p([float(i) for i in range(1, 101)], 0.95) == 96.0
