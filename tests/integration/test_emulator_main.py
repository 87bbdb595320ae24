"""`python -m infra.qbo_emulator` starts, prints its URLs as one JSON line, serves discovery, and stops."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
