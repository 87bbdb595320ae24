"""``make bench`` lists every benchmark the issue asks for (they run outside ``make test``: they are measurements)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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


def _with_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, source: str) -> Any:
    """``bench.__main__`` with one more benchmark module (``source``), visible to its child interpreters too,
    writing its results under ``tmp_path``."""
    import bench.__main__ as runner

    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(runner, "MODULES", (*runner.MODULES, name))
    monkeypatch.setattr(runner, "RESULTS", tmp_path / "results")
    return runner


def test_each_benchmark_runs_in_a_fresh_interpreter_and_its_figures_come_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = _with_module(
        monkeypatch,
        tmp_path,
        "bench_probe",
        "import os\n"
        "from bench import benchmark\n"
        "@benchmark('probe', group='probe', summary='the interpreter that ran it')\n"
        "def probe(opts):\n"
        "    return {'pid': os.getpid(), 'events': opts.events, 'quick': opts.quick}\n",
    )
    assert runner.main(["--only", "probe", "--events", "7"]) == 0
    table = capsys.readouterr().out.splitlines()
    rows = {line.split()[1]: line.split()[2] for line in table if line.startswith("probe")}
    assert int(rows["pid"]) != os.getpid()  # not this process: a child of its own
    assert rows["events"] == "7"
    assert rows["quick"] == "False"
    saved = json.loads((tmp_path / "results" / "probe.json").read_text())
    assert saved["probe"]["pid"] == int(rows["pid"])


def test_an_unknown_benchmark_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--only", "no_such_bench"])
    assert "no_such_bench" in capsys.readouterr().err


def test_one_run_of_the_baseline_and_the_realm_throughput_reports_their_ratios(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = _with_module(
        monkeypatch,
        tmp_path,
        "bench_pair",
        "from bench import benchmark\n"
        "@benchmark('naive_baseline', group='throughput', summary='stand-in')\n"
        "def base(opts):\n"
        "    return {'visits_per_min': 125.0, 'http_calls_per_visit': 4.0, 'metered_reads_per_visit': 2.0}\n"
        "@benchmark('realm_throughput', group='throughput', summary='stand-in')\n"
        "def ours(opts):\n"
        "    return {'pairs_per_min_sustained': 562.5, 'pairs_per_min_end_to_end': 500.0,\n"
        "            'http_calls_per_visit': 0.1, 'metered_reads_per_visit': 0.0}\n",
    )
    assert runner.main(["--only", "naive_baseline", "realm_throughput"]) == 0
    rows = {
        line.split()[1]: line.split()[2]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("qbsync_vs_baseline")
    }
    assert rows == {
        "throughput_ratio_sustained": "4.500",
        "throughput_ratio_end_to_end": "4.000",
        "http_calls_per_visit_ratio": "0.025",
        "metered_reads_per_visit_ratio": "0.000",
    }
    saved = json.loads((tmp_path / "results" / "throughput.json").read_text())
    assert saved["qbsync_vs_baseline"]["throughput_ratio_sustained"] == 4.5


def test_no_ratios_without_both_benchmarks() -> None:
    from bench.baseline import versus

    assert versus({"realm_throughput": {"pairs_per_min_sustained": 500.0}}) == {}


def test_a_failing_benchmark_is_reported_and_the_others_still_print(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = _with_module(
        monkeypatch,
        tmp_path,
        "bench_mixed",
        "from bench import benchmark\n"
        "@benchmark('breaks', group='mixed', summary='raises')\n"
        "def breaks(opts):\n"
        "    raise RuntimeError('no figures')\n"
        "@benchmark('works', group='mixed', summary='a figure')\n"
        "def works(opts):\n"
        "    return {'answer': 42}\n",
    )
    assert runner.main(["--only", "breaks", "works"]) == 1
    out = capsys.readouterr()
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in out.out.splitlines() if line.startswith(("br", "wo"))}
    assert rows[("works", "answer")] == ["42"]
    assert rows[("breaks", "error")] == ["exited", "with", "1"]
    assert "failed: breaks" in out.err
    saved = json.loads((tmp_path / "results" / "mixed.json").read_text())
    assert saved["works"]["answer"] == 42
