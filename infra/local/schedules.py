"""Timers for the template's schedules (AWS::Events::Rule and AWS::Scheduler::Schedule targets).

``rate(N unit)`` and ``cron(min hour dom month dow year)`` (UTC) are honoured; ``interval_override_s`` makes
every schedule fire at that interval instead (tests and demos). :meth:`Scheduler.trigger` fires one now.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from infra.local.runtime import Runtime
from infra.local.template import ScheduleSpec

log = logging.getLogger("qbsync.local")

_UNITS = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}


def rate_seconds(expression: str) -> float | None:
    m = re.fullmatch(r"rate\(\s*(\d+)\s+(\w+)\s*\)", expression.strip())
    return int(m.group(1)) * _UNITS[m.group(2)] if m and m.group(2) in _UNITS else None


def next_cron(expression: str, after: datetime) -> datetime | None:
    """Next UTC time after ``after`` matching an EventBridge cron expression (no L, W or #)."""
    m = re.fullmatch(r"cron\((.+)\)", expression.strip())
    if not m:
        return None
    fields = m.group(1).split()
    if len(fields) != 6:
        return None
    try:
        minutes = _field(fields[0], 0, 59)
        hours = _field(fields[1], 0, 23)
        doms = _field(fields[2], 1, 31)
        months = _field(fields[3], 1, 12, _MONTHS)
        dows = _field(fields[4], 1, 7, _DAYS)
        years = _field(fields[5], 1970, 2199)
    except ValueError:
        log.warning("cron expression %s uses syntax the local scheduler does not support", expression)
        return None
    t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(366 * 24 * 60):
        # EventBridge day of week: 1 = Sunday ... 7 = Saturday; Python weekday(): 0 = Monday.
        dow = (t.weekday() + 1) % 7 + 1
        if (
            t.year in years
            and t.month in months
            and t.day in doms
            and dow in dows
            and t.hour in hours
            and t.minute in minutes
        ):
            return t
        t += timedelta(minutes=1)
    return None


_MONTHS = {
    n: i + 1 for i, n in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"))
}
_DAYS = {n: i + 1 for i, n in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}


def _field(text: str, lo: int, hi: int, names: dict[str, int] | None = None) -> set[int]:
    if text in ("*", "?"):
        return set(range(lo, hi + 1))
    values: set[int] = set()
    for item in text.upper().split(","):
        part, step = item, 1
        if "/" in item:
            part, step_text = item.split("/")
            step = int(step_text)
        if part in ("*", ""):
            start, end = lo, hi
        elif "-" in part:
            a, b = part.split("-")
            start, end = _num(a, names), _num(b, names)
        else:
            start = _num(part, names)
            end = hi if step > 1 else start
        values.update(range(start, end + 1, step))
    return values


def _num(text: str, names: dict[str, int] | None) -> int:
    if names and text in names:
        return names[text]
    if not text.isdigit():
        raise ValueError(text)
    return int(text)


class Scheduler:
    def __init__(
        self,
        schedules: dict[str, ScheduleSpec],
        runtime: Runtime,
        region: str,
        account_id: str,
        *,
        interval_override_s: float | None = None,
        enabled: bool = True,
    ) -> None:
        self.schedules = schedules
        self.runtime = runtime
        self.region = region
        self.account_id = account_id
        self.interval_override_s = interval_override_s
        self.enabled = enabled
        self._next: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fire_lock = threading.Lock()

    def start(self) -> Scheduler:
        now = time.time()
        for name, spec in self.schedules.items():
            nxt = self._next_after(spec, now)
            if nxt is not None and spec.enabled:
                self._next[name] = nxt
        if self.enabled and self._next:
            self._thread = threading.Thread(target=self._run, name="local-scheduler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _next_after(self, spec: ScheduleSpec, now: float) -> float | None:
        if self.interval_override_s:
            return now + self.interval_override_s
        rate = rate_seconds(spec.expression)
        if rate:
            return now + rate
        nxt = next_cron(spec.expression, datetime.fromtimestamp(now, UTC))
        if nxt is None:
            log.warning(
                "schedule %s: cannot compute when %r fires; use trigger_schedule()",
                spec.logical_id,
                spec.expression,
            )
        return nxt.timestamp() if nxt else None

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            for name, when in list(self._next.items()):
                if when <= now and not self._stop.is_set():
                    nxt = self._next_after(self.schedules[name], now)
                    if nxt is None:
                        del self._next[name]
                    else:
                        self._next[name] = nxt
                    try:
                        self.trigger(name)
                    except Exception:
                        log.exception("schedule %s: %s failed", name, self.schedules[name].function_id)
            wait = min(self._next.values(), default=now + 1) - time.time()
            self._stop.wait(max(0.01, min(wait, 1.0)))

    def resolve_name(self, name: str) -> str:
        """Accepts a schedule's logical id, or a function's logical id when it has exactly one schedule.

        Raises KeyError for an unknown or ambiguous name.
        """
        if name in self.schedules:
            return name
        matches = [n for n, s in self.schedules.items() if s.function_id == name]
        if len(matches) == 1:
            return matches[0]
        raise KeyError(f"no single schedule named {name!r}; known: {sorted(self.schedules)}")

    def event(self, spec: ScheduleSpec) -> Any:
        if spec.input is not None:
            return json.loads(spec.input) if isinstance(spec.input, str) else spec.input
        if spec.kind == "scheduler":
            return {}
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self.account_id,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.region,
            "resources": [f"arn:aws:events:{self.region}:{self.account_id}:rule/{spec.logical_id}"],
            "detail": {},
        }

    def trigger(self, name: str) -> Any:
        """Invoke the schedule's function now; returns what it returned (re-raises its exception)."""
        spec = self.schedules[self.resolve_name(name)]
        self.runtime.stats.add("schedules", spec.logical_id)
        return self.runtime.invoke(spec.function_id, self.event(spec))
