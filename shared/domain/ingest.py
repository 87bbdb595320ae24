"""The booking-webhook ingest service: verify → validate → store → answer.

``POST /v1/events`` carries one event object or ``{"events": [...]}`` (1..100). The service:

1. rejects oversized bodies (413) and anything but ``application/json`` (415) before looking inside;
2. authenticates the tenant header and HMAC signature (401; unknown tenant 404), see ``signing``;
3. parses and validates every event before writing anything (400 naming the field, 422 unknown type);
4. stores the PHI-free events in one all-or-nothing write, idempotent on event id (a repeat of an
   identical event is accepted again; a reused id with a different body is a 409);
5. answers ``202 {"status": "accepted", "event_ids": [...]}`` (the same answer for every repeat).

No I/O here: tenants' signing keys and the event store are injected (see the protocols below).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from decimal import Decimal
from typing import Any, Protocol

from pydantic import ValidationError

from shared.domain import signing
from shared.domain.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    RequestError,
    RetryableError,
    Unauthorized,
    UnprocessableEvent,
    UnsupportedMediaType,
)
from shared.domain.event_types import EventType
from shared.domain.events import Event, EventEnvelope, UnknownEventType, parse_event
from shared.domain.problems import field_path, problems_from

MAX_BATCH = 100
# Rounds of "write the new ones" after finding duplicates; each round removes at least one event, and a
# concurrent writer can only add duplicates, so a few rounds always suffice unless storage keeps failing.
_MAX_STORE_ROUNDS = 4


class StorageUnavailable(RequestError):
    """The ledger could not take the write right now (throttled, conflicting transactions): retry later."""

    status = 503


@dataclass(frozen=True)
class IngestRequest:
    headers: Mapping[str, str]  # names lower-cased
    body: bytes

    @classmethod
    def of(cls, headers: Mapping[str, str] | None, body: bytes) -> IngestRequest:
        return cls(headers={k.lower(): v for k, v in (headers or {}).items()}, body=body)

    def header(self, name: str) -> str | None:
        value = self.headers.get(name.lower())
        return value.strip() if value is not None and value.strip() else None


@dataclass(frozen=True)
class StoredEvent:
    """A validated event with the hash that identifies its content (for idempotency)."""

    event: Event
    body_sha256: str


@dataclass(frozen=True)
class Accepted:
    event_ids: tuple[str, ...]
    tenant_id: str
    duplicates: int = 0  # for logs only: the body is the same whether or not an event was new
    status: int = field(default=202, init=False)

    def body(self) -> dict[str, Any]:
        return {"status": "accepted", "event_ids": list(self.event_ids)}


class SigningKeys(Protocol):
    def secrets_for(self, tenant_id: str, *, fresh: bool = False) -> Sequence[str] | None:
        """The tenant's active signing secrets (current first), or None if the tenant is unknown.

        ``fresh`` bypasses any cache (used once after a mismatch, so a just-rotated secret works at once).
        """
        ...


class EventWriter(Protocol):
    def insert_all(self, events: Sequence[StoredEvent]) -> dict[str, str]:
        """Insert every event atomically, or none of them.

        Returns ``{}`` when all were written. If some ids already exist, writes nothing and returns
        ``{event_id: stored body_sha256}`` for them. Raises RetryableError when storage is unavailable.
        """
        ...


def canonical_sha256(event: Event) -> str:
    """SHA-256 of the event as stored (PHI-free, occurred_at in UTC, sorted keys): its identity for repeats."""
    doc = {
        "id": event.id,
        "type": event.type.value,
        "tenant_id": event.tenant_id,
        "occurred_at": event.occurred_at.astimezone(UTC).isoformat(),
        "version": event.version,
        "data": event.data,
    }
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


class IngestService:
    def __init__(
        self,
        keys: SigningKeys,
        writer: EventWriter,
        *,
        max_body_bytes: int,
        tolerance_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._writer = writer
        self._max_body_bytes = max_body_bytes
        self._tolerance_s = tolerance_s
        self._clock = clock

    def ingest(self, request: IngestRequest) -> Accepted:
        """Verify, validate and store the request's events.

        Raises PayloadTooLarge (413), UnsupportedMediaType (415), Unauthorized (401), NotFound (404),
        BadRequest (400), UnprocessableEvent (422), Conflict (409) or StorageUnavailable (503).
        """
        if len(request.body) > self._max_body_bytes:
            raise PayloadTooLarge(f"body is larger than {self._max_body_bytes} bytes", limit=self._max_body_bytes)
        _require_json(request.header("content-type"))
        tenant_id = self._authenticate(request)
        items = _split(_decode(request.body))
        events = _validate(items, tenant_id)
        duplicates = self._store(items, events)
        return Accepted(event_ids=tuple(e.id for e in events), tenant_id=tenant_id, duplicates=duplicates)

    def _authenticate(self, request: IngestRequest) -> str:
        tenant_id = request.header(signing.TENANT_HEADER)
        if tenant_id is None:
            raise Unauthorized(f"missing {signing.TENANT_HEADER} header", field=signing.TENANT_HEADER)
        header = request.header(signing.SIGNATURE_HEADER)
        if header is None:
            raise Unauthorized(f"missing {signing.SIGNATURE_HEADER} header", field=signing.SIGNATURE_HEADER)
        parsed = signing.parse(header)
        signing.check_timestamp(parsed, now=self._clock(), tolerance_s=self._tolerance_s)
        secrets = self._keys.secrets_for(tenant_id)
        if secrets is None:
            raise NotFound(f"unknown tenant '{tenant_id}'", field=signing.TENANT_HEADER)
        if signing.matches(request.body, parsed, secrets):
            return tenant_id
        # The secret may have been rotated after we cached it: look once more, bypassing the cache.
        fresh = self._keys.secrets_for(tenant_id, fresh=True)
        if fresh and signing.matches(request.body, parsed, fresh):
            return tenant_id
        raise Unauthorized(
            "signature does not match the body under the tenant's signing secret", field=signing.SIGNATURE_HEADER
        )

    def _store(self, items: Sequence[tuple[str, Any]], events: Sequence[Event]) -> int:
        """Write the new events; check repeats against what is stored. Returns how many were repeats."""
        stored = [StoredEvent(event=e, body_sha256=canonical_sha256(e)) for e in events]
        prefixes = {e.id: prefix for (prefix, _), e in zip(items, events, strict=True)}
        pending = stored
        for _ in range(_MAX_STORE_ROUNDS):
            try:
                existing = self._writer.insert_all(pending)
            except RetryableError as exc:
                raise StorageUnavailable("the event store is busy; retry with the same body") from exc
            if not existing:
                return len(stored) - len(pending)
            for item in pending:
                if item.event.id in existing and existing[item.event.id] != item.body_sha256:
                    path = field_path(prefixes[item.event.id], ["id"])
                    raise Conflict(
                        f"event id '{item.event.id}' was already accepted with a different body",
                        field=path,
                        suggested_fix="give a changed event a new id (and a higher version)",
                    )
            pending = [item for item in pending if item.event.id not in existing]
            if not pending:
                return len(stored)
        raise StorageUnavailable("the event store is busy; retry with the same body")


def _require_json(content_type: str | None) -> None:
    media, _, params = (content_type or "").partition(";")
    charset = ""
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "charset":
            charset = value.strip().strip('"').lower()
    if media.strip().lower() != "application/json" or charset not in ("", "utf-8", "utf8"):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json (utf-8), got '{content_type or ''}'", field="Content-Type"
        )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise BadRequest("body is nested too deeply", field="body") from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadRequest(f"body is not valid JSON: {_json_problem(exc)}", field="body") from exc


def _json_problem(exc: ValueError) -> str:
    # JSONDecodeError's msg/position never echo the document; other errors are summarised by type.
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return "body is not UTF-8"
    return str(exc)


def _split(doc: Any) -> list[tuple[str, Any]]:
    """(path prefix, raw event) pairs: ``("", event)`` for one event, ``("events[i]", event)`` for a batch."""
    if isinstance(doc, dict) and "events" in doc and "type" not in doc:
        extra = sorted(set(doc) - {"events"})
        if extra:
            raise BadRequest(f"unexpected key '{extra[0]}' next to 'events'", field=extra[0])
        batch = doc["events"]
        if not isinstance(batch, list):
            raise BadRequest("events must be an array of events", field="events")
        if not 1 <= len(batch) <= MAX_BATCH:
            raise BadRequest(f"events must hold 1 to {MAX_BATCH} events, got {len(batch)}", field="events")
        return [(f"events[{i}]", raw) for i, raw in enumerate(batch)]
    if isinstance(doc, dict):
        return [("", doc)]
    raise BadRequest('body must be one event object or {"events": [...]}', field="body")


def _validate(items: Sequence[tuple[str, Any]], tenant_id: str) -> list[Event]:
    """Validate every event (all problems are collected, none is stored unless all are valid)."""
    problems: list[dict[str, str]] = []
    unknown: list[dict[str, str]] = []
    events: list[Event] = []
    first_seen: dict[str, str] = {}
    for prefix, raw in items:
        if not isinstance(raw, dict):
            problems.append({"field": prefix or "body", "problem": "an event must be a JSON object"})
            continue
        try:
            envelope = EventEnvelope.model_validate(raw)
        except ValidationError as exc:
            problems.extend(problems_from(exc, prefix))
            continue
        if envelope.tenant_id != tenant_id:
            problems.append(
                {"field": field_path(prefix, ["tenant_id"]), "problem": "must equal the X-Qbsync-Tenant header"}
            )
        if envelope.id in first_seen:
            problems.append(
                {"field": field_path(prefix, ["id"]), "problem": f"repeats the id of {first_seen[envelope.id]}"}
            )
        first_seen.setdefault(envelope.id, prefix or "the event")
        try:
            events.append(parse_event(envelope))
        except UnknownEventType:
            unknown.append(
                {"field": field_path(prefix, ["type"]), "problem": f"unknown event type '{envelope.type[:64]}'"}
            )
        except ValidationError as exc:
            problems.extend(_data_problems(exc, field_path(prefix, ["data"]), envelope.type))
    if problems:
        first = problems[0]
        raise BadRequest(f"{first['field']}: {first['problem']}", field=first["field"], problems=problems)
    if unknown:
        raise UnprocessableEvent(
            f"{unknown[0]['field']}: {unknown[0]['problem']}",
            field=unknown[0]["field"],
            problems=unknown,
            known_types=[t.value for t in EventType],
        )
    return events


def _data_problems(exc: ValidationError, prefix: str, event_type: str) -> list[dict[str, str]]:
    # parse_event validates a removal's bare object id as "object_id"; removal types (payment.deleted,
    # credit.deleted, invoice.voided, appointment.cancelled...) name that field "<kind>_id" in data.
    id_field = f"{event_type.split('.', 1)[0]}_id"
    return [
        {**p, "field": p["field"].replace(f"{prefix}.object_id", f"{prefix}.{id_field}", 1)}
        for p in problems_from(exc, prefix)
    ]
