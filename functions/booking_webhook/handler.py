"""``POST /v1/events`` (verify → validate → store → 202), ``GET /v1/openapi.json``. Glue; never calls QBO."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from shared.adapters.event_store import EventStore
from shared.adapters.tenants import SigningKeyring, TenantRepository
from shared.config import get_settings
from shared.domain.errors import RequestError
from shared.domain.ingest import IngestRequest, IngestService
from shared.http import request_body, request_headers, respond
from shared.observability import count, log_unhandled, logger, metrics, tracer

log = logger()


@lru_cache(maxsize=1)
def service() -> IngestService:
    # One per container: clients and the tenant / secret caches are reused across invocations.
    s = get_settings()
    keys = SigningKeyring(TenantRepository())
    return IngestService(keys, EventStore(), max_body_bytes=s.max_body_bytes, tolerance_s=s.signature_tolerance_s)


def post_events(event: dict[str, Any]) -> tuple[int, Any]:
    answer = service().ingest(IngestRequest.of(request_headers(event), request_body(event)))
    log.info("events accepted", extra={"tenant_id": answer.tenant_id, "events": len(answer.event_ids)})
    count("EventsAccepted", len(answer.event_ids))
    count("EventsRepeated", answer.duplicates)
    return answer.status, answer.body()


def get_openapi(event: dict[str, Any]) -> tuple[int, Any]:
    from shared.domain.openapi import build  # only this route pays for schema generation

    count("OpenApiServed")
    return 200, build()


ROUTES = {"POST": post_events, "GET": get_openapi}


def _rejected(err: RequestError) -> None:
    log.info("request rejected", extra={"status": err.status, "error": type(err).__name__, "field": err.field})
    count("RequestsRejected")


def _bug(exc: Exception) -> None:
    log_unhandled(exc, "RequestsFailed")


@log.inject_lambda_context(clear_state=True)
@metrics().log_metrics
@tracer().capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    route = ROUTES.get(str(event.get("httpMethod", "")).upper(), post_events)
    return respond(lambda: route(event), on_error=_rejected, on_bug=_bug)
