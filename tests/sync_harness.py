"""Drive the sync engine against the QBO emulator without the local stack (engine-level tests).

``SyncHarness`` stores events as ingest would, then drains: applies events and reconciles dirty objects
until nothing is dirty (what the stream + sync worker do on the local stack).
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from infra.demo.company import mappings as company_mappings
from infra.demo.company import setup_company
from infra.local.filters import matches_any
from infra.local.template import load_template
from infra.qbo_emulator.control import EmulatorControl
from shared.adapters.dynamo import ConnectionItem, EventItem, ObjectItem
from shared.adapters.qbo.client import QboClient
from shared.adapters.qbo.coalesce import CoalescingClient, Workers
from shared.adapters.qbo.pacing import Pacer
from shared.adapters.qbo.types import QboApi
from shared.domain.events import EventEnvelope, parse_event
from shared.services.sweeps import retry_sweep
from shared.services.sync import SyncService
from tests.builders import tenant_row
from tests.fakes import MemoryPaceStore

DELIVERY_ORDERS = ("duplicated", "reversed", "random")
ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _sync_worker_filters() -> list[dict[str, Any]]:
    model = load_template(ROOT / "template.yaml")
    (source,) = [
        s for s in model.event_sources.values() if s.function_id == "SyncWorkerFunction" and s.source_kind == "dynamodb"
    ]
    return source.filters


def stream_delivers(obj: ObjectItem) -> bool:
    """Whether the ledger stream hands this object's current image to the sync worker (the template's filter).

    The harness drains only such objects: one the stream holds back stays dirty, as it would on AWS."""
    return matches_any(_sync_worker_filters(), {"eventName": "MODIFY", "dynamodb": {"NewImage": obj.serialize()}})


def delivered(events: list[dict[str, Any]], order: str, seed: int) -> list[dict[str, Any]]:
    """``events`` as the platform might deliver them: each twice, in reverse, or shuffled (``seed``)."""
    if order == "duplicated":
        return [e for e in events for _ in (0, 1)]
    if order == "reversed":
        return events[::-1]
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)
    return shuffled


class EmulatorTokens:
    """Access tokens issued directly by the emulator (the OAuth flow has its own tests)."""

    def __init__(self, control: EmulatorControl) -> None:
        self.control = control
        self._tokens: dict[str, str] = {}

    def access_token(self, realm_id: str) -> str:
        if realm_id not in self._tokens:
            self._tokens[realm_id] = self.control.issue_tokens(realm_id)["access_token"]
        return self._tokens[realm_id]

    def refresh_after_401(self, realm_id: str, rejected: str) -> str:
        self._tokens.pop(realm_id, None)
        return self.access_token(realm_id)


@dataclass
class SyncHarness:
    control: EmulatorControl
    realm_id: str
    tenant_id: str = "clinic-1"
    coalesce: bool = False  # writes through a CoalescingClient, as the sync worker does (batch calls)
    service: SyncService = field(init=False)
    clients: list[QboClient] = field(default_factory=list)
    workers: Workers = field(default_factory=Workers)

    def __post_init__(self) -> None:
        tokens = EmulatorTokens(self.control)

        def factory(realm: str) -> QboApi:
            # Pacing itself has its own tests (on DynamoDB too); here it runs in memory so engine tests stay fast.
            client = QboClient(realm, tokens=tokens, pacer=Pacer(realm, store=MemoryPaceStore()))
            self.clients.append(client)
            if not self.coalesce:
                return client
            # A batch goes when every worker waits on it (or it is full); the linger only bounds a straggler.
            # Writers of one object record their intents one at a time first, so the default 50 ms (or even 2 s,
            # in CI beside other work) would split their batch; a miscounted worker shows up as slow tests.
            return CoalescingClient(client, workers=self.workers, linger_s=30.0)

        self.service = SyncService(factory)

    # ------------------------------------------------------------------ setup
    def setup_company(self, *, classes: bool = True, departments: bool = True) -> None:
        """Items, classes and departments in the emulated company; tenant + connection rows in the ledger."""
        setup_company(self.control, self.realm_id, classes=classes, departments=departments)
        mappings = company_mappings(classes=classes, departments=departments)
        self.put_tenant(mappings=mappings)
        ConnectionItem(
            f"REALM#{self.realm_id}",
            "CONN",
            rtype="connection",
            realm_id=self.realm_id,
            status="connected",
            secret_id="unused",
            company={"ClassTrackingPerTxn": classes, "TrackDepartments": departments, "AllowDiscount": True},
        ).save()

    def put_tenant(self, *, mappings: dict[str, Any], settings: dict[str, Any] | None = None) -> None:
        tenant_row(self.tenant_id, self.realm_id, settings=settings, mappings=mappings, name="Harness Clinic")
        self.service._tenants.clear()

    # ------------------------------------------------------------------ events
    def store(self, envelopes: Iterable[dict[str, Any]]) -> int:
        """Store events like ingest does (idempotent on id). Returns how many were new."""
        new = 0
        for env in envelopes:
            event = parse_event(EventEnvelope.model_validate(env))
            item = EventItem(
                f"EVT#{event.tenant_id}#{event.id}",
                "EVT",
                rtype="event",
                tenant_id=event.tenant_id,
                event_id=event.id,
                type=event.type.value,
                object_key=event.object_key,
                version=event.version,
                occurred_at=event.occurred_at.isoformat(),
                received_at=datetime.now(UTC).isoformat(),
                body_sha256=hashlib.sha256(json.dumps(env, sort_keys=True, default=str).encode()).hexdigest(),
                data=event.data,
                phi_dropped=event.phi_dropped,
                gsi1pk=f"OBJ#{event.tenant_id}#{event.object_key}",
                gsi1sk=f"{event.version:020d}#{event.id}",
            )
            try:
                item.save(condition=EventItem.pk.does_not_exist())
            except Exception:  # a duplicate delivery
                continue
            self.service.apply_event(item)
            new += 1
        return new

    def drain(self, max_rounds: int = 20, shuffle: random.Random | None = None) -> int:
        """Reconcile the objects the stream delivers until none is left. Returns reconcile calls made."""
        calls = 0
        for _ in range(max_rounds):
            dirty = [o for o in self.objects() if stream_delivers(o)]
            if not dirty:
                return calls
            if shuffle:
                shuffle.shuffle(dirty)
            for obj in dirty:
                self.reconcile(obj.tenant_id, obj.object_key)
                calls += 1
        raise AssertionError("objects still dirty after drain")

    def drain_dropping_every_write(self, max_steps: int = 400) -> None:
        """Reconcile one dirty object at a time with the next QBO write armed to commit and lose its response
        (connection reset), so every write is dropped once before it is confirmed; objects in backoff are made
        due at once (what the retry sweep does after the delay). Faults are cleared at the end."""
        later = datetime.now(UTC) + timedelta(hours=1)
        for _ in range(max_steps):
            dirty = [o for o in self.objects() if stream_delivers(o)]
            if not dirty:
                if not any(retry_sweep(now=later).values()):
                    break
                continue
            self.control.set_faults(self.realm_id, commit_then_drop={"next": 1})
            self.reconcile(dirty[0].tenant_id, dirty[0].object_key)
        self.control.clear_faults(self.realm_id)

    def reconcile(self, tenant_id: str, object_key: str) -> None:
        with self.workers.worker(self.realm_id):  # as the sync worker counts each record it processes
            self.service.reconcile(tenant_id, object_key)

    def objects(self, status: str | None = None) -> list[ObjectItem]:
        return [o for o in ObjectItem.scan() if o.rtype == "object" and (status is None or o.status == status)]

    def invoices(self) -> list[dict[str, Any]]:
        return list(self.control.books(self.realm_id).get("Invoice", []))


def money(v: Any) -> Decimal:
    return Decimal(str(v)).quantize(Decimal("0.01"))
