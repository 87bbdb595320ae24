"""QuickBooks connect / callback / disconnect (routes of OAuthFunction in template.yaml).

Three fixed routes are dispatched by hand, as the booking webhook does: Powertools' event-handler package imports
every resolver it has (AppSync, Bedrock, asyncio...), about 40 % of a bare ``import boto3`` on a cold start,
for a routing table of three entries.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.adapters.qbo.faults import QboFault
from shared.domain.errors import BadRequest, ErrorKind, NotFound, RequestError
from shared.http import answer, json_response
from shared.observability import count, log_unhandled, logger, metrics
from shared.services.connect import ConnectService

log = logger()
NO_STORE = {"Cache-Control": "no-store"}


@lru_cache(maxsize=1)
def service() -> ConnectService:
    return ConnectService()


def connect(event: dict[str, Any]) -> dict[str, Any]:
    url = service().authorize_url(_query(event).get("tenant"))
    return {"statusCode": 302, "headers": {"Location": url, **NO_STORE}, "body": ""}


def callback(event: dict[str, Any]) -> dict[str, Any]:
    page = service().callback_page(_query(event))
    return {
        "statusCode": page.status,
        "headers": {"Content-Type": "text/html; charset=utf-8", **NO_STORE},
        "body": page.html,
    }


def disconnect(event: dict[str, Any]) -> dict[str, Any]:
    return json_response(200, service().disconnect(_json_object(event.get("body")).get("tenant")))


ROUTES: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("GET", "/oauth/connect"): connect,
    ("GET", "/oauth/callback"): callback,
    ("POST", "/oauth/disconnect"): disconnect,
}


def _query(event: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (event.get("queryStringParameters") or {}).items() if v is not None}


def _json_object(body: Any) -> dict[str, Any]:
    if not body:
        return {}
    try:
        value = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise BadRequest("the body is not valid JSON", field="body") from exc
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object", field="body")
    return value


def _qbo_unavailable(exc: QboFault) -> dict[str, Any]:
    """Intuit refused or failed (502), or the Intuit app is not configured yet (503, a fix for ops)."""
    err = exc.as_error()
    log.warning("qbo oauth call failed", extra={"fault": type(exc).__name__, "qbo_code": exc.code})
    count("OAuthQboUnavailable", fault=type(exc).__name__)
    return json_response(503 if err.kind == ErrorKind.RECONNECT else 502, err.to_dict())


def _route(event: dict[str, Any]) -> dict[str, Any]:
    method = str(event.get("httpMethod", "")).upper()
    route = ROUTES.get((method, str(event.get("resource") or event.get("path") or "")))
    if route is None:
        raise NotFound(f"no route {method} {event.get('path')!s}")
    try:
        return route(event)
    except QboFault as exc:
        return _qbo_unavailable(exc)


def _rejected(err: RequestError) -> None:
    log.info("oauth request rejected", extra={"status": err.status, "field": err.field})


def _bug(exc: Exception) -> None:
    log_unhandled(exc, "OAuthRequestsFailed")


# Query strings carry codes and states: never log the event.
@log.inject_lambda_context(clear_state=True, log_event=False)
@metrics().log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return answer(lambda: _route(event), on_error=_rejected, on_bug=_bug)
