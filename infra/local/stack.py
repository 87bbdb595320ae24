"""The local stack: emulated AWS + the template's resources + gateway + pollers + schedules, one object.

    stack = LocalStack(template="template.yaml").start()
    stack.urls, stack.env, stack.wait_idle(), stack.invoke("Fn", {}), stack.trigger_schedule("Rule")
    stack.stop()

Handlers run in this process. The process environment is set to the union of the functions' (resolved)
Environment blocks plus the endpoint overrides and dummy credentials, and restored by :meth:`stop`.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from infra.local.aws import (
    ACCOUNT_ID,
    DUMMY_CREDENTIALS,
    DynamoDBLocal,
    MotoServer,
    client,
    create_resources,
    find_ddb_local_jar,
)
from infra.local.gateway import Gateway
from infra.local.runtime import Runtime
from infra.local.schedules import Scheduler
from infra.local.sqs import QueuePoller
from infra.local.streams import StreamPoller
from infra.local.template import Resolver, TemplateModel, load_template
from shared.lifecycle import reset_container_state

log = logging.getLogger("qbsync.local")

_LIVE: weakref.WeakSet[LocalStack] = weakref.WeakSet()
_CLEARED_VARS = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_DEFAULT_PROFILE")


class LocalStack:
    def __init__(
        self,
        template: str | os.PathLike[str] = "template.yaml",
        *,
        parameters: dict[str, Any] | None = None,
        region: str = "us-east-1",
        use_ddb_local: bool = True,
        schedule_interval_override_s: float | None = None,
        schedules_enabled: bool = True,
        env_overrides: dict[str, str] | None = None,
        poll_interval_s: float = 0.1,
    ) -> None:
        self.template_path = Path(template)
        self.parameters = parameters or {}
        self.region = region
        self.use_ddb_local = use_ddb_local
        self.schedule_interval_override_s = schedule_interval_override_s
        self.schedules_enabled = schedules_enabled
        self.env_overrides = dict(env_overrides or {})
        self.poll_interval_s = poll_interval_s
        self.model: TemplateModel | None = None
        self.resolver: Resolver | None = None
        self.runtime: Runtime | None = None
        self.env: dict[str, str] = {}
        self.urls: dict[str, Any] = {}
        self.ddb_backend = ""
        self.ddb_startup_s = 0.0
        self.pollers: list[StreamPoller | QueuePoller] = []
        self.gateways: dict[str, Gateway] = {}
        self.scheduler: Scheduler | None = None
        self._moto: MotoServer | None = None
        self._ddb: DynamoDBLocal | None = None
        self._saved_env: dict[str, str | None] = {}
        self._extra_stops: list[Callable[[], None]] = []
        self._stopped = True
        self._lock = threading.Lock()

    # lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> LocalStack:
        """Bring everything up; returns self once routes, pollers and schedules are live.

        Raises TemplateError for a template the translator rejects; cleans up what it started on any error.
        """
        self._stopped = False
        _LIVE.add(self)
        werkzeug_log = logging.getLogger("werkzeug")
        if werkzeug_log.level == logging.NOTSET:
            werkzeug_log.setLevel(logging.WARNING)  # one access-log line per emulated AWS call is noise
        _install_exit_handlers()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        t0 = time.monotonic()
        self.model = load_template(self.template_path, self.parameters, self.region)
        t_template = time.monotonic()
        jar = find_ddb_local_jar(self.model.root) if self.use_ddb_local else None
        if jar is not None:
            try:
                self._ddb = DynamoDBLocal(jar).launch()  # boots while moto starts
            except FileNotFoundError:
                self._ddb = None
        self._moto = MotoServer().start()
        ddb_url = self._moto.url
        if self._ddb is not None:
            for attempt in range(3):
                try:
                    self._ddb.wait_ready(self.region)
                    break
                except RuntimeError:  # it exited: most often, another process took its port before Java bound it
                    if jar is None or attempt == 2:
                        raise
                    self._ddb = DynamoDBLocal(jar).launch()
            ddb_url, self.ddb_backend, self.ddb_startup_s = (
                self._ddb.url,
                "dynamodb-local",
                self._ddb.startup_s,
            )
            log.info("DynamoDB Local %s ready in %.1fs", jar, self._ddb.startup_s)
        else:
            self.ddb_backend = "moto"
            why = "disabled" if not self.use_ddb_local else "Java or DynamoDBLocal.jar not found (make ddb-local)"
            log.warning(
                "DynamoDB Local %s: moto serves DynamoDB (no TTL expiry; no-op writes emit stream records)",
                why,
            )
        t_emulators = time.monotonic()
        self.resolver = Resolver(self.model, self.region, ACCOUNT_ID)
        created = create_resources(self.model, self.resolver, ddb_url, self._moto.url, self.region)
        t_resources = time.monotonic()
        self.urls = {"aws": self._moto.url, "dynamodb": ddb_url, "dynamodbstreams": ddb_url}
        self._apply_env(ddb_url)
        # Every function starts cold: no cache may still point at a previous stack's endpoints.
        reset_container_state()
        self.runtime = Runtime(self.model.functions, self.region, ACCOUNT_ID)
        self._start_gateways()
        self._start_pollers(created, ddb_url)
        self.scheduler = Scheduler(
            self.model.schedules,
            self.runtime,
            self.region,
            ACCOUNT_ID,
            interval_override_s=self.schedule_interval_override_s,
            enabled=self.schedules_enabled,
        ).start()
        log.info(
            "local stack ready in %.1fs (template %.1fs, emulators %.1fs, resources %.1fs, the rest %.1fs)",
            time.monotonic() - t0,
            t_template - t0,
            t_emulators - t_template,
            t_resources - t_emulators,
            time.monotonic() - t_resources,
        )

    def stop(self) -> None:
        """Stop every thread and server and the Java process, restore the environment. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        if self.scheduler is not None:
            self.scheduler.stop()
        for poller in self.pollers:
            poller.stop()
        for gateway in self.gateways.values():
            gateway.stop()
        for stop in reversed(self._extra_stops):
            with contextlib.suppress(Exception):
                stop()
        if self._moto is not None:
            self._moto.stop()
        if self._ddb is not None:
            self._ddb.stop()
        self._restore_env()
        reset_container_state()
        _LIVE.discard(self)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # wiring ---------------------------------------------------------------------------------------------
    def _function_env(self) -> dict[str, str]:
        assert self.model and self.resolver
        merged: dict[str, str] = {}
        origin: dict[str, str] = {}
        for fn in self.model.functions.values():
            for key, raw in fn.environment.items():
                value = self.resolver.resolve(raw)
                text = str(value).lower() if isinstance(value, bool) else str(value)
                if key in merged and merged[key] != text:
                    log.warning(
                        "env %s differs between %s (%r) and %s (%r); in-process handlers share one "
                        "environment, keeping the first",
                        key,
                        origin[key],
                        merged[key],
                        fn.logical_id,
                        text,
                    )
                    continue
                merged.setdefault(key, text)
                origin.setdefault(key, fn.logical_id)
        return merged

    def _apply_env(self, ddb_url: str) -> None:
        assert self._moto
        env = dict(self._function_env())
        env.update(DUMMY_CREDENTIALS)
        env.update(
            {
                "AWS_DEFAULT_REGION": self.region,
                "AWS_REGION": self.region,
                "AWS_ENDPOINT_URL": self._moto.url,
                "AWS_ENDPOINT_URL_DYNAMODB": ddb_url,
                "AWS_ENDPOINT_URL_DYNAMODB_STREAMS": ddb_url,
                "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
            }
        )
        env.update(self.env_overrides)
        self.env = env
        for key in (*env, *_CLEARED_VARS):
            self._saved_env.setdefault(key, os.environ.get(key))
        for key in _CLEARED_VARS:
            os.environ.pop(key, None)
        os.environ.update(env)

    def _restore_env(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = {}

    def _start_gateways(self) -> None:
        assert self.model and self.runtime
        if not self.model.routes:
            return
        self.gateways["*"] = Gateway(self.model.routes, self.runtime, self.region, ACCOUNT_ID).start()
        self.urls["api"] = self.gateways["*"].url
        self.urls["apis"] = {}
        for api_id in dict.fromkeys(r.api_id for r in self.model.routes):
            routes = [r for r in self.model.routes if r.api_id == api_id]
            self.gateways[api_id] = Gateway(routes, self.runtime, self.region, ACCOUNT_ID).start()
            self.urls["apis"][api_id] = self.gateways[api_id].url

    def _start_pollers(self, created: dict[str, Any], ddb_url: str) -> None:
        assert self.model and self.resolver and self.runtime and self._moto
        sqs = client("sqs", self._moto.url, self.region)
        for spec in self.model.event_sources.values():
            if not spec.enabled:
                continue
            poller: StreamPoller | QueuePoller
            if spec.source_kind == "dynamodb":
                arn = created["table_streams"].get(spec.source_id)
                if not arn:
                    log.warning("%s reads %s, which has no stream; skipped", spec.logical_id, spec.source_id)
                    continue
                on_failure = created["queue_urls"].get(spec.on_failure_id) if spec.on_failure_id else None
                poller = StreamPoller(
                    spec,
                    arn,
                    streams_client=client("dynamodbstreams", ddb_url, self.region),
                    sqs_client=sqs,
                    on_failure_url=on_failure,
                    runtime=self.runtime,
                    region=self.region,
                    poll_interval_s=self.poll_interval_s,
                )
            else:
                poller = QueuePoller(
                    spec,
                    created["queue_urls"][spec.source_id],
                    self.resolver.getatt(spec.source_id, "Arn"),
                    sqs_client=client("sqs", self._moto.url, self.region),
                    runtime=self.runtime,
                    region=self.region,
                    poll_interval_s=self.poll_interval_s,
                )
            self.pollers.append(poller.start())

    # API for tests, the demo and the CLI ----------------------------------------------------------------
    def add_server(
        self, name: str, url: str, stop: Callable[[], None] | None = None, env: dict[str, str] | None = None
    ) -> None:
        """Register a server the caller started (e.g. the QBO emulator): its URL joins ``urls``, ``env`` joins
        the process environment (restored on stop), and ``stop`` is called by :meth:`stop`."""
        self.urls[name] = url
        if stop is not None:
            self._extra_stops.append(stop)
        for key, value in (env or {}).items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value
            self.env[key] = value

    @contextlib.contextmanager
    def paused(self) -> Iterator[LocalStack]:
        """Hold every poller between cycles (e.g. to write several records that must form one batch)."""
        for poller in self.pollers:
            poller.pause()
        try:
            yield self
        finally:
            for poller in self.pollers:
                poller.resume()

    def invoke(self, function_logical_id: str, event: Any) -> Any:
        """Invoke a function synchronously (RequestResponse); re-raises the handler's exception."""
        assert self.runtime, "start() first"
        return self.runtime.invoke(function_logical_id, event)

    def trigger_schedule(self, name: str) -> Any:
        """Fire a schedule now (by its logical id, or its function's when unique); returns the result."""
        assert self.scheduler, "start() first"
        return self.scheduler.trigger(name)

    def stats(self) -> dict[str, dict[str, int]]:
        assert self.runtime, "start() first"
        return self.runtime.stats.snapshot()

    def ref(self, logical_id: str) -> Any:
        """The local value of ``!Ref logical_id`` (table name, queue URL, secret ARN, ...)."""
        assert self.resolver, "start() first"
        return self.resolver.ref(logical_id)

    def getatt(self, logical_id: str, attribute: str) -> Any:
        assert self.resolver, "start() first"
        return self.resolver.getatt(logical_id, attribute)

    def client(self, service: str) -> Any:
        """A boto3 client for ``service`` pointed at the emulator that serves it."""
        endpoint = self.urls["dynamodb"] if service in ("dynamodb", "dynamodbstreams") else self.urls["aws"]
        return client(service, endpoint, self.region)

    def wait_idle(self, timeout: float = 30.0, settle_polls: int = 3) -> None:
        """Return once no poller has pending records or messages and no invocation is in flight, for
        ``settle_polls`` consecutive polls of every poller with no activity in between.

        Raises TimeoutError (naming the busy pollers) when that does not happen within ``timeout`` seconds.
        """
        assert self.runtime, "start() first"
        deadline = time.monotonic() + timeout
        while True:
            if self._quiet(settle_polls):
                activity = self.runtime.activity
                cycles = [p.cycles for p in self.pollers]
                # Two more cycles each: the one under way may have read its source before the caller's last
                # write; the next one starts after this point, so it sees every write made before the call.
                while any(p.cycles <= c + 1 for p, c in zip(self.pollers, cycles, strict=True)):
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
                else:
                    time.sleep(0 if self.pollers else 0.05)
                    if self._quiet(settle_polls) and self.runtime.activity == activity:
                        return
            if time.monotonic() > deadline:
                busy = [p.name for p in self.pollers if p.idle_streak < settle_polls]
                inflight = self.runtime.inflight
                raise TimeoutError(f"local stack not idle after {timeout}s: busy pollers {busy}, in flight {inflight}")
            time.sleep(0.02)

    def _quiet(self, settle_polls: int) -> bool:
        assert self.runtime
        return self.runtime.inflight == 0 and all(p.idle_streak >= settle_polls for p in self.pollers)


_exit_handlers: list[bool] = []


def _stop_all() -> None:
    for stack in list(_LIVE):
        with contextlib.suppress(Exception):
            stack.stop()


def _install_exit_handlers() -> None:
    """atexit for normal exits and Ctrl-C; SIGTERM becomes SystemExit so the same cleanup runs."""
    if _exit_handlers:
        return
    _exit_handlers.append(True)
    atexit.register(_stop_all)
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM)
        if previous in (signal.SIG_DFL, None):

            def on_sigterm(signum: int, frame: Any) -> None:
                _stop_all()
                raise SystemExit(128 + signum)

            signal.signal(signal.SIGTERM, on_sigterm)
