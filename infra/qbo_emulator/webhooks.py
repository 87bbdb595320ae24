"""Webhook delivery: signed POSTs in legacy or CloudEvents format, aggregation, retries, at-least-once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

from .books import Change
from .util import Clock, fmt_utc

PAST = {
    "Create": "created",
    "Update": "updated",
    "Delete": "deleted",
    "Void": "voided",
    "Merge": "merged",
    "Emailed": "emailed",
}


def sign(body: bytes, verifier_token: str) -> str:
    """The `intuit-signature` header: base64(HMAC-SHA256(key=verifier token, msg=raw body))."""
    digest = hmac.new(verifier_token.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(body: bytes, signature: str, verifier_token: str) -> bool:
    return hmac.compare_digest(sign(body, verifier_token), signature)


@dataclass
class WebhookConfig:
    url: str | None = None
    verifier_token: str = "emulator-verifier-token"
    format: str = "cloudevents"  # "legacy" | "cloudevents"
    enabled: bool = True
    # Intuit: 0 s, 10 s, 20 s, 30 s, 5 m, 20 m, 2 h, ... compressed 100x for tests.
    retry_schedule_s: list[float] = field(default_factory=lambda: [0, 0.1, 0.2, 0.3, 3.0, 12.0])
    aggregate_window_s: float = 0.05
    timeout_s: float = 3.0
    max_events_per_post: int = 100
    source: str = "intuit.emulatorRealmSourceQboEmulator="

    def update(self, data: dict[str, Any]) -> None:
        """Raises: KeyError on an unknown key; ValueError on a bad format."""
        for key, value in data.items():
            if key not in self.__dataclass_fields__:
                raise KeyError(key)
            setattr(self, key, value)
        if self.format not in ("legacy", "cloudevents"):
            raise ValueError(f"format must be legacy or cloudevents, not {self.format!r}")


@dataclass
class Event:
    id: str
    realm_id: str
    entity: str
    entity_id: str
    operation: str
    ts: float
    deleted_id: str | None = None


def cloudevent(ev: Event, source: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "specversion": "1.0",
        "id": ev.id,
        "source": source,
        "type": f"qbo.{ev.entity.lower()}.{PAST.get(ev.operation, ev.operation.lower())}.v1",
        "datacontenttype": "application/json",
        "time": fmt_utc(ev.ts),
        "intuitentityid": ev.entity_id,
        "intuitaccountid": ev.realm_id,
        "data": {"deletedid": ev.deleted_id} if ev.deleted_id else {},
    }
    return out


def legacy(events: list[Event]) -> dict[str, Any]:
    notes: list[dict[str, Any]] = []
    for ev in events:
        # One realm per eventNotifications element, in event order.
        if not notes or notes[-1]["realmId"] != ev.realm_id:
            notes.append({"realmId": ev.realm_id, "dataChangeEvent": {"entities": []}})
        ent: dict[str, Any] = {
            "name": ev.entity,
            "id": ev.entity_id,
            "operation": ev.operation,
            "lastUpdated": fmt_utc(ev.ts),
        }
        if ev.deleted_id:
            ent["deletedId"] = ev.deleted_id
        notes[-1]["dataChangeEvent"]["entities"].append(ent)
    return {"eventNotifications": notes}


class WebhookDispatcher:
    """Background sender. API threads only enqueue, so responses are never delayed by deliveries."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.config = WebhookConfig()
        self.events: list[Event] = []
        self.deliveries: list[dict[str, Any]] = []
        self._pending: list[Event] = []
        self._cond = threading.Condition()
        self._busy = False
        self._stop = False
        self._generation = 0
        self._thread = threading.Thread(target=self._run, name="qbo-emulator-webhooks", daemon=True)
        self._session = requests.Session()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def reset(self) -> None:
        with self._cond:
            self._generation += 1
            self.config = WebhookConfig()
            self.events.clear()
            self.deliveries.clear()
            self._pending.clear()
            self._cond.notify_all()

    def configure(self, data: dict[str, Any]) -> None:
        """Raises: KeyError / ValueError for bad settings."""
        with self._cond:
            self.config.update(data)
            self._cond.notify_all()

    def record(self, changes: list[Change]) -> None:
        with self._cond:
            for ch in changes:
                ev = Event(str(uuid.uuid4()), ch.realm_id, ch.entity, ch.id, ch.operation, ch.ts, ch.deleted_id)
                self.events.append(ev)
                # enabled=false: the change is recorded but never sent (simulates lost notifications).
                if self.config.enabled and self.config.url:
                    self._pending.append(ev)
            self._cond.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def snapshot(self) -> dict[str, Any]:
        with self._cond:
            return {
                "config": asdict(self.config),
                "events": [asdict(e) for e in self.events],
                "deliveries": list(self.deliveries),
                "pending": len(self._pending),
            }

    # ---- thread --------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                self._busy = True
                window = self.config.aggregate_window_s
            try:
                time.sleep(window)  # aggregate events within a short window into one POST
                with self._cond:
                    cfg = WebhookConfig(**asdict(self.config))
                    batch = self._pending[: cfg.max_events_per_post]
                    generation = self._generation
                if batch:
                    try:
                        self._deliver(batch, cfg, generation)
                    except Exception as exc:  # a bad setting must not kill the sender thread
                        with self._cond:
                            self.deliveries.append(
                                {"attempt": 0, "status": None, "error": repr(exc), "event_ids": [e.id for e in batch]}
                            )
                with self._cond:
                    if generation == self._generation:
                        del self._pending[: len(batch)]
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _deliver(self, batch: list[Event], cfg: WebhookConfig, generation: int) -> None:
        payload: Any = legacy(batch) if cfg.format == "legacy" else [cloudevent(e, cfg.source) for e in batch]
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        headers = {
            "Content-Type": "application/json" if cfg.format == "legacy" else "application/cloudevents+json",
            "intuit-signature": sign(body, cfg.verifier_token),
            "User-Agent": "qbo-emulator-webhooks",
        }
        for attempt, delay in enumerate(cfg.retry_schedule_s, start=1):
            if delay:
                time.sleep(delay)
            with self._cond:
                if self._stop or generation != self._generation:
                    return
            status: int | None = None
            error = ""
            try:
                resp = self._session.post(str(cfg.url), data=body, headers=headers, timeout=cfg.timeout_s)
                status = resp.status_code
            except requests.RequestException as exc:
                error = type(exc).__name__
            with self._cond:
                self.deliveries.append(
                    {
                        "attempt": attempt,
                        "status": status,
                        "error": error,
                        "event_ids": [e.id for e in batch],
                        "format": cfg.format,
                        "time": self.clock.now(),
                        "body": body.decode("utf-8"),
                        "signature": headers["intuit-signature"],
                    }
                )
            if status == 200:  # Intuit: anything but 200 (within the timeout) is a failure
                return
