"""``ANY /ops/{proxy+}`` (IAM auth): failures, dead letters, status, connections, mappings, matching.

Glue only: the routes and their work live in ``shared.services.ops.ROUTES``; errors map to HTTP in
``shared.http.respond``. Bodies are never logged (they may name patients).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.domain.errors import RequestError
from shared.observability import log_unhandled, logger, metrics
from shared.services.ops import ROUTES, OpsRequest, parse_request

app = APIGatewayRestResolver()
log = logger()


def _rejected(err: RequestError) -> None:
    log.info("ops request rejected", extra={"status": err.status, "error": type(err).__name__, "field": err.field})


def _bug(exc: Exception) -> None:
    log_unhandled(exc, "OpsRequestsFailed")


def _view(fn: Callable[[OpsRequest], tuple[int, Any]]) -> Callable[..., Response[str]]:
    from shared.http import respond

    def view(**params: str) -> Response[str]:
        ev = app.current_event

        def call() -> tuple[int, Any]:
            ctx = ev.raw_event.get("requestContext")
            return fn(parse_request(params, ev.headers or {}, ev.query_string_parameters, ev.body, ctx))

        out = respond(call, on_error=_rejected, on_bug=_bug)
        return Response(out["statusCode"], "application/json", out["body"])

    return view


for _method, _path, _fn, _ in ROUTES:
    app.route(_path, _method)(_view(_fn))


@log.inject_lambda_context(clear_state=True, log_event=False)
@metrics().log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
