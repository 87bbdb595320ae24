"""The whole system on one machine: the local AWS stack (template.yaml's wiring) plus the QBO emulator.

``LocalSystem`` starts the emulator, then the stack with its handlers pointed at the emulator (API base,
OAuth discovery), stores the OAuth app credentials and the webhook verifier token in the secrets the
template declares, registers the app in the emulator and points the emulator's webhooks at the gateway's
``/webhooks/qbo``. ``qbsync local up``, ``qbsync demo`` and the end-to-end tests all use it.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from infra.local.aws import die_with_parent, stop_child
from infra.local.stack import LocalStack
from infra.qbo_emulator import EmulatorServer
from infra.qbo_emulator.control import EmulatorControl

ROOT = Path(__file__).resolve().parents[2]


class EmulatorProcess:
    """The QBO emulator in a process of its own (``python -m infra.qbo_emulator``), with ``EmulatorServer``'s
    ``url`` / ``control`` / ``stop``. QuickBooks is a remote service: in the local system's process its request
    handling would share one interpreter lock with every handler, and a flooded realm's QBO traffic would slow
    the other realms' handlers on this machine as it never does on AWS. The benchmarks run it so.

    The child binds a free port itself and writes its URLs as one JSON line when it serves (``--json``), to a file
    rather than a pipe nobody reads; like DynamoDB Local it is stopped by ``stop`` or by the kernel if we die."""

    def __init__(self, host: str = "127.0.0.1", timeout_s: float = 30.0) -> None:
        self.host = host
        self.timeout_s = timeout_s
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: Any = None

    @property
    def control(self) -> EmulatorControl:
        return EmulatorControl(self.url)

    def start(self) -> EmulatorProcess:
        cmd = [sys.executable, "-m", "infra.qbo_emulator", "--host", self.host, "--port", "0", "--json"]
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self._proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._out, preexec_fn=die_with_parent())  # noqa: PLW1509
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            self._out.seek(0)
            line = self._out.readline()
            if line.endswith(b"\n"):
                self.url = json.loads(line)["url"]
                return self
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise RuntimeError(f"the QBO emulator exited with {code} before it listened")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the QBO emulator did not listen within {self.timeout_s:.0f} s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        stop_child(proc, timeout_s=10)
        if self._out is not None:
            self._out.close()
            self._out = None


class LocalSystem:
    def __init__(
        self,
        template: str | Path = ROOT / "template.yaml",
        *,
        use_ddb_local: bool = True,
        schedules_enabled: bool = True,
        schedule_interval_override_s: float | None = None,
        webhook_format: str = "cloudevents",
        emulator_limits: bool = True,
        emulator_process: bool = False,
        quiet: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        """``emulator_process``: run the QBO emulator in a process of its own (``EmulatorProcess``) instead of a
        thread of this one; its in-process state (``emulator.emulator``) is then out of reach."""
        self.template = Path(template)
        self.use_ddb_local = use_ddb_local
        self.schedules_enabled = schedules_enabled
        self.schedule_interval_override_s = schedule_interval_override_s
        self.webhook_format = webhook_format
        self.emulator_limits = emulator_limits
        self.emulator_process = emulator_process
        self.quiet = quiet  # handlers log warnings only (the demo prints its own summary)
        self.env = dict(env or {})  # extra environment for every function (settings, e.g. RETRY_BASE_S)
        self.client_id = "qbsync-local-app"
        self.client_secret = secrets.token_urlsafe(24)
        self.verifier_token = secrets.token_urlsafe(24)
        self.emulator: EmulatorServer | EmulatorProcess | None = None
        self.stack: LocalStack | None = None

    def start(self) -> LocalSystem:
        self.emulator = (EmulatorProcess() if self.emulator_process else EmulatorServer(port=0)).start()
        self.stack = LocalStack(
            self.template,
            use_ddb_local=self.use_ddb_local,
            schedules_enabled=self.schedules_enabled,
            schedule_interval_override_s=self.schedule_interval_override_s,
            env_overrides={
                "QBO_ENVIRONMENT": "local",
                "QBO_BASE_URL": self.emulator.url,
                "QBO_DISCOVERY_URL": f"{self.emulator.url}/.well-known/openid_configuration",
                # intuit-oauth / requests-oauthlib refuse plain http unless told it is a local test setup.
                "OAUTHLIB_INSECURE_TRANSPORT": "1",
                "OPS_LOCAL_KEY": secrets.token_urlsafe(16),
                **({"POWERTOOLS_LOG_LEVEL": "WARNING"} if self.quiet else {}),
                **self.env,
            },
        )
        try:
            self.stack.start()
            self.stack.add_server("qbo", self.emulator.url, stop=None)
            self._configure()
        except BaseException:
            self.stop()
            raise
        return self

    def _configure(self) -> None:
        assert self.stack is not None and self.emulator is not None
        redirect = f"{self.api_url}/oauth/callback"
        sm = self.stack.client("secretsmanager")
        sm.put_secret_value(
            SecretId=self.stack.ref("QboAppSecret"),
            SecretString=json.dumps(
                {"client_id": self.client_id, "client_secret": self.client_secret, "redirect_uri": redirect}
            ),
        )
        sm.put_secret_value(
            SecretId=self.stack.ref("QboWebhookVerifierSecret"),
            SecretString=json.dumps({"verifier_token": self.verifier_token}),
        )
        control = self.control
        control.register_app(self.client_id, self.client_secret, [redirect])
        control.set_webhooks(
            url=f"{self.api_url}/webhooks/qbo",
            verifier_token=self.verifier_token,
            format=self.webhook_format,
            enabled=True,
        )
        control.set_limits(enabled=self.emulator_limits)

    @property
    def api_url(self) -> str:
        assert self.stack is not None
        return str(self.stack.urls["apis"]["Api"]).rstrip("/")

    @property
    def control(self) -> EmulatorControl:
        assert self.emulator is not None
        return EmulatorControl(self.emulator.url)

    @property
    def urls(self) -> dict[str, Any]:
        assert self.stack is not None and self.emulator is not None
        return {
            "api": self.api_url,
            "qbo": self.emulator.url,
            "qbo_control": f"{self.emulator.url}/_emulator",
            "aws": self.stack.urls.get("aws"),
            "dynamodb": self.stack.urls.get("dynamodb"),
            "ops_key": self.stack.env.get("OPS_LOCAL_KEY"),
        }

    def wait_idle(self, timeout: float = 120.0) -> None:
        assert self.stack is not None
        # Let pending QBO webhooks reach the gateway first (bounded: a failing receiver retries for long).
        self.control.wait_webhooks_idle(timeout=8.0)
        self.stack.wait_idle(timeout=timeout)

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()
            self.stack = None
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None

    def __enter__(self) -> LocalSystem:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
