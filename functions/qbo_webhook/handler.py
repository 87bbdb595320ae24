"""``POST /webhooks/qbo``: verify ``intuit-signature`` → parse → store notices → 200. Glue only.

No QBO client is imported: the request path never calls QuickBooks (Intuit wants 200 within 3 s).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from shared.adapters.notices import NoticeStore, RealmTenants, VerifierSecret
from shared.config import get_settings
from shared.domain.errors import RequestError
from shared.http import request_body, request_headers, respond
from shared.observability import count, log_unhandled, logger, metrics, tracer
from shared.services.qbo_changes import WebhookIntake

log = logger()


@lru_cache(maxsize=1)
def service() -> WebhookIntake:
    return WebhookIntake(VerifierSecret(get_settings().qbo_webhook_verifier_secret_id), NoticeStore(), RealmTenants())


def post(event: dict[str, Any]) -> tuple[int, Any]:
    result = service().receive(request_headers(event), request_body(event))
    log.info("qbo notices", extra={"stored": result.stored, "duplicates": result.duplicates})
    count("QboNoticesStored", result.stored)
    count("QboNoticesDuplicate", result.duplicates)
    count("QboNoticesUnknownRealm", result.unknown_realm)
    count("QboNoticesIgnored", result.ignored)
    return 200, result.body()


def _rejected(err: RequestError) -> None:
    log.info("qbo webhook rejected", extra={"status": err.status, "field": err.field})
    count("QboWebhookRejected")


def _bug(exc: Exception) -> None:
    log_unhandled(exc, "QboWebhookFailed")


@log.inject_lambda_context(clear_state=True)
@metrics().log_metrics
@tracer().capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return respond(lambda: post(event), on_error=_rejected, on_bug=_bug)
