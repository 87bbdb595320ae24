"""In-process Lambda runtime: import handlers by their Handler path and invoke them with a fake context.

Invocations may run concurrently (gateway threads, pollers, schedules); the :class:`Runtime` counts them so
the stack can tell when all work is done, and keeps the per-function statistics.

Containers: an invocation names the execution environment it runs in (``container``, 0 by default). Container 0
imports the handler normally; each further container loads the handler's file again as a module of its own, so
concurrent invocations in different containers keep the handler module's state (its caches, its per-invocation
bookkeeping) apart, as Lambda's environments do. Modules the handler imports (``shared``) are loaded once per
process and shared; what must be per environment lives in the handler module.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.local.template import FunctionSpec

log = logging.getLogger("qbsync.local")


@dataclass
class FakeLambdaContext:
    """The attributes of ``awslambdaric``'s LambdaContext that handlers and Powertools use."""

    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    deadline_ms: int

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.deadline_ms - int(time.time() * 1000))


class Stats:
    """Thread-safe counters: invocations, errors and milliseconds run per function; records, retries, filtered
    records and on-failure sends per event source mapping; fires per schedule."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, Counter[str]] = {
            name: Counter()
            for name in ("invocations", "errors", "ms", "records", "retries", "filtered", "on_failure", "schedules")
        }

    def add(self, kind: str, key: str, n: int = 1) -> None:
        with self._lock:
            self._counters[kind][key] += n

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {kind: dict(c) for kind, c in self._counters.items()}


class Runtime:
    def __init__(self, functions: dict[str, FunctionSpec], region: str, account_id: str) -> None:
        self.functions = functions
        self.region = region
        self.account_id = account_id
        self.stats = Stats()
        self._handlers: dict[tuple[str, int], Callable[..., Any]] = {}
        self._import_lock = threading.RLock()
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        self._activity = 0

    @property
    def inflight(self) -> int:
        with self._inflight_lock:
            return self._inflight

    @property
    def activity(self) -> int:
        """Increases with every invocation start and end; lets wait_idle notice work that came and went."""
        with self._inflight_lock:
            return self._activity

    def function_arn(self, function_id: str) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{function_id}"

    def handler(self, function_id: str, container: int = 0) -> Callable[..., Any]:
        with self._import_lock:
            key = (function_id, container)
            if key not in self._handlers:
                self._handlers[key] = _load_handler(self.functions[function_id], container)
            return self._handlers[key]

    def context(self, function_id: str) -> FakeLambdaContext:
        spec = self.functions[function_id]
        return FakeLambdaContext(
            function_name=function_id,
            function_version="$LATEST",
            invoked_function_arn=self.function_arn(function_id),
            memory_limit_in_mb=spec.memory_mb,
            aws_request_id=str(uuid.uuid4()),
            log_group_name=f"/aws/lambda/{function_id}",
            log_stream_name=f"local/[$LATEST]{uuid.uuid4().hex}",
            deadline_ms=int(time.time() * 1000) + spec.timeout_s * 1000,
        )

    def invoke(self, function_id: str, event: Any, container: int = 0) -> Any:
        """Call the function's handler in ``container`` with ``event``; re-raises whatever the handler raises.

        Raises KeyError for a function that is not in the template.
        """
        if function_id not in self.functions:
            raise KeyError(f"no function {function_id!r} in the template")
        with self._inflight_lock:
            self._inflight += 1
            self._activity += 1
        started = time.monotonic()
        timeout_s = self.functions[function_id].timeout_s
        watch = threading.Timer(timeout_s, _overran, (function_id, timeout_s, threading.get_ident()))
        watch.daemon = True
        watch.start()
        try:
            fn = self.handler(function_id, container)
            self.stats.add("invocations", function_id)
            return fn(event, self.context(function_id))
        except Exception:
            self.stats.add("errors", function_id)
            raise
        finally:
            watch.cancel()
            elapsed = time.monotonic() - started
            self.stats.add("ms", function_id, round(elapsed * 1000))
            if elapsed > self.functions[function_id].timeout_s:
                log.warning(
                    "function %s ran %.1fs, longer than its Timeout of %ss (Lambda would have stopped it)",
                    function_id,
                    elapsed,
                    self.functions[function_id].timeout_s,
                )
            with self._inflight_lock:
                self._inflight -= 1
                self._activity += 1


def _overran(function_id: str, timeout_s: int, thread_id: int) -> None:
    """At the Timeout of an invocation still running (Lambda would stop it here): where its thread is."""
    frame = sys._current_frames().get(thread_id)
    if frame is None:
        where = "(thread gone)"
    else:
        # The project's own frames (where in qbsync), then the innermost ones (what it waits on).
        stack = traceback.extract_stack(frame)
        ours = [f for f in stack if "site-packages" not in f.filename and "/lib/python3" not in f.filename]
        where = "".join(traceback.format_list(ours[-10:])) + "  ...\n" + "".join(traceback.format_list(stack[-3:]))
    log.warning("function %s still running at its Timeout of %ss; its thread is at:\n%s", function_id, timeout_s, where)


def _load_handler(spec: FunctionSpec, container: int = 0) -> Callable[..., Any]:
    """Import ``module.attr`` from the function's code directory.

    The code directory goes on sys.path so the handler's own imports work. When a module of the same name is
    already imported from elsewhere (two functions with their own ``handler.py``), or for a container other than
    the first, the file is loaded under a private module name instead.
    """
    module_name, _, attr = spec.handler.rpartition(".")
    if not module_name:
        raise ImportError(f"Handler {spec.handler!r} of {spec.logical_id} is not module.function")
    code_dir = str(spec.code_dir)
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    file = Path(code_dir, *module_name.split("."))
    candidates = [file.with_suffix(".py"), file / "__init__.py"]
    existing = sys.modules.get(module_name)
    existing_file = getattr(existing, "__file__", None)
    clash = existing is not None and existing_file and not any(Path(existing_file) == c for c in candidates)
    if clash or container:
        path = next((c for c in candidates if c.exists()), None)
        if path is None:
            raise ImportError(f"cannot find {module_name} under {code_dir} for {spec.logical_id}")
        suffix = f"_c{container}" if container else ""
        private = f"_qbsync_local_{spec.logical_id}_{module_name.replace('.', '_')}{suffix}"
        module = sys.modules.get(private)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(private, path)
            assert loader_spec and loader_spec.loader
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[private] = module
            loader_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ImportError(f"{spec.handler!r} of {spec.logical_id} is not a callable")
    return fn
