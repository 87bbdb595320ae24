"""QuickBooks connect / callback / disconnect (routes of OAuthFunction in template.yaml)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.domain.errors import RequestError
from shared.http import error_response
from shared.observability import logger, metrics
from shared.services.connect import ConnectService

app = APIGatewayRestResolver()


@lru_cache(maxsize=1)
def service() -> ConnectService:
    return ConnectService()


@app.get("/oauth/connect")
def connect() -> Response[str]:
    url = service().authorize_url(app.current_event.get_query_string_value("tenant"))
    return Response(status_code=302, headers={"Location": url, "Cache-Control": "no-store"}, body="")


@app.get("/oauth/callback")
def callback() -> Response[str]:
    page = service().callback_page(app.current_event.query_string_parameters or {})
    return Response(page.status, "text/html; charset=utf-8", page.html, headers={"Cache-Control": "no-store"})


@app.post("/oauth/disconnect")
def disconnect() -> dict[str, Any]:
    body = app.current_event.json_body if app.current_event.body else {}
    return service().disconnect((body or {}).get("tenant"))


@app.exception_handler(RequestError)  # type: ignore[untyped-decorator]
def request_error(exc: RequestError) -> Response[str]:
    err = error_response(exc)
    return Response(err["statusCode"], "application/json", err["body"])


# Query strings carry codes and states: never log the event.
@logger().inject_lambda_context(clear_state=True, log_event=False)
@metrics().log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
