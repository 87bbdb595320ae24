"""Rate/concurrency limits and injected faults, with the exact bodies QBO sends for them."""

from __future__ import annotations

import random
import threading
from collections import deque
from typing import Any

from .store import Limits, RealmFaults
from .util import Clock, dumps, fmt_ts

THROTTLE_MESSAGE = "message=ThrottleExceeded; errorCode=003001; statusCode=429"


def throttle_body(now: float, as_xml: bool) -> tuple[str, str]:
    """(body, content type) of a 429. QBO has been seen answering XML even to JSON requests."""
    if as_xml:
        body = (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            f'<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" time="{fmt_ts(now, True)}">'
            f'<Fault type="SERVICE"><Error code="3001"><Message>{THROTTLE_MESSAGE}</Message>'
            "<Detail>The request limit was reached.</Detail></Error></Fault></IntuitResponse>"
        )
        return body, "application/xml"
    return dumps(
        {
            "Fault": {
                "Error": [{"Message": THROTTLE_MESSAGE, "Detail": "The request limit was reached.", "code": "3001"}],
                "type": "SERVICE",
            },
            "time": fmt_ts(now, True),
        }
    ), "application/json"


def auth_fault_body(now: float, detail: str) -> str:
    """The gateway's 401 shape: lower-case keys, type AUTHENTICATION, code 3200."""
    return dumps(
        {
            "fault": {
                "error": [
                    {
                        "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                        "detail": f"Token {detail}",
                        "code": "3200",
                    }
                ],
                "type": "AUTHENTICATION",
            },
            "time": fmt_ts(now, True),
        }
    )


def system_fault_body(now: float, status: int) -> str:
    if status == 503:
        err = {
            "Message": "Service Unavailable",
            "Detail": "The service is temporarily unavailable. Try again later.",
            "code": "10000",
        }
    else:
        err = {
            "Message": "An application error has occurred while processing your request",
            "Detail": "System Failure Error: An unexpected error occurred while accessing or saving "
            "your data. "
            "Please wait a few minutes and try again.",
            "code": "10000",
        }
    return dumps({"Fault": {"Error": [err], "type": "SystemFault"}, "time": fmt_ts(now, True)})


class Limiter:
    """Per-realm sliding one-minute windows (requests, batch calls) and an in-flight counter."""

    def __init__(self, limits: Limits, clock: Clock) -> None:
        self.limits = limits
        self.clock = clock
        self._lock = threading.Lock()
        self._requests: dict[str, deque[float]] = {}
        self._batches: dict[str, deque[float]] = {}
        self._inflight: dict[str, int] = {}

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._batches.clear()
            self._inflight.clear()

    @staticmethod
    def _trim(window: deque[float], now: float) -> None:
        while window and window[0] <= now - 60:
            window.popleft()

    def enter(self, realm: str, is_batch: bool) -> bool:
        """Admit a request (and count it in flight) or refuse it. Callers must `leave` after an admit."""
        with self._lock:
            if not self.limits.enabled:
                self._inflight[realm] = self._inflight.get(realm, 0) + 1
                return True
            now = self.clock.now()
            if self._inflight.get(realm, 0) >= self.limits.max_inflight:
                return False
            reqs = self._requests.setdefault(realm, deque())
            self._trim(reqs, now)
            if len(reqs) >= self.limits.per_minute:
                return False
            if is_batch:
                batches = self._batches.setdefault(realm, deque())
                self._trim(batches, now)
                if len(batches) >= self.limits.batch_per_minute:
                    return False
                batches.append(now)
            reqs.append(now)
            self._inflight[realm] = self._inflight.get(realm, 0) + 1
            return True

    def leave(self, realm: str) -> None:
        with self._lock:
            self._inflight[realm] = max(0, self._inflight.get(realm, 0) - 1)


def faults_from_json(f: RealmFaults, data: dict[str, Any], now: float) -> None:
    """Apply the control API's fault document.

    Raises:
        KeyError: unknown key.
    """
    for key, value in data.items():
        if key == "error_rate":
            f.error_rate = float(value)
        elif key == "error_status":
            f.error_status = int(value)
        elif key == "latency_ms":
            f.latency_ms = int(value)
        elif key == "outage_seconds":
            f.outage_until = now + float(value) if value else 0.0
        elif key == "force_401":
            f.force_401 = bool(value)
        elif key == "throttle_seconds":
            f.throttle_until = now + float(value) if value else 0.0
        elif key == "commit_then_drop":
            spec = value or {}
            f.drop_rate = float(spec.get("rate", 0.0))
            f.drop_next = int(spec.get("next", 0))
            f.drop_entities = list(spec.get("entities", []))
        else:
            raise KeyError(key)


def faults_to_json(f: RealmFaults, now: float) -> dict[str, Any]:
    return {
        "error_rate": f.error_rate,
        "error_status": f.error_status,
        "latency_ms": f.latency_ms,
        "outage_seconds_left": max(0.0, f.outage_until - now),
        "force_401": f.force_401,
        "throttle_seconds_left": max(0.0, f.throttle_until - now),
        "commit_then_drop": {"rate": f.drop_rate, "next": f.drop_next, "entities": f.drop_entities},
    }


def should_drop(f: RealmFaults, entity: str | None) -> bool:
    """Decide (and consume) a commit-then-drop for a write on `entity`."""
    if f.drop_entities and entity not in f.drop_entities:
        return False
    if f.drop_next > 0:
        f.drop_next -= 1
        return True
    return f.drop_rate > 0 and random.random() < f.drop_rate


def roll_error(f: RealmFaults) -> bool:
    return f.error_rate > 0 and random.random() < f.error_rate
