"""`python -m infra.qbo_emulator` starts, prints its URLs as one JSON line, serves discovery, and stops."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]


def test_module_entry_point() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.qbo_emulator", "--port", "0", "--json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        doc = requests.get(info["discovery"], timeout=5).json()
        assert doc["token_endpoint"] == f"{info['url']}/oauth2/v1/tokens/bearer"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0


def test_the_local_system_can_run_the_emulator_in_a_process_of_its_own() -> None:
    from infra.local.system import EmulatorProcess

    emulator = EmulatorProcess().start()
    try:
        realm = str(emulator.control.create_realm(company_name="Out of process PT")["realm_id"])
        assert emulator.control.books(realm)["Account"]  # a stateful emulator, reached over HTTP
        pid = emulator._proc.pid if emulator._proc else None
    finally:
        emulator.stop()
    assert pid is not None
    with pytest.raises(ProcessLookupError):  # stopped and reaped
        os.kill(pid, 0)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{emulator.url}/.well-known/openid_configuration", timeout=2)


def test_an_emulator_process_that_cannot_start_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    from infra.local import system

    monkeypatch.setattr(system.sys, "executable", "/bin/false")
    with pytest.raises(RuntimeError, match="exited with 1"):
        system.EmulatorProcess(timeout_s=5).start()
