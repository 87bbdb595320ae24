"""The one place that maps errors to HTTP answers (API Gateway proxy responses)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from typing import Any

from shared.domain.errors import BadRequest, RequestError


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", **(headers or {})},
        "body": json.dumps(body, default=str, separators=(",", ":")),
    }


def error_response(err: RequestError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": type(err).__name__, "message": err.message}
    if err.field:
        body["field"] = err.field
    extra = {k: v for k, v in err.details.items() if k != "field" and v is not None}
    if extra:
        body["details"] = extra
    return json_response(err.status, body)


def request_headers(event: Mapping[str, Any]) -> dict[str, str]:
    """An API Gateway proxy event's headers with lower-cased names."""
    return {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items() if v is not None}


def request_body(event: Mapping[str, Any]) -> bytes:
    """The raw request body bytes (what a signature covers). Raises BadRequest for broken base64."""
    raw = event.get("body") or ""
    if not event.get("isBase64Encoded"):
        return str(raw).encode()
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("body is not valid base64", field="body") from exc


def respond(
    call: Callable[[], tuple[int, Any]],
    *,
    on_error: Callable[[RequestError], None] | None = None,
    on_bug: Callable[[Exception], None] | None = None,
) -> dict[str, Any]:
    """Run a request's work, which answers (status, JSON body); map its outcome to a proxy response (``answer``)."""
    return answer(lambda: json_response(*call()), on_error=on_error, on_bug=on_bug)


def answer(
    call: Callable[[], dict[str, Any]],
    *,
    on_error: Callable[[RequestError], None] | None = None,
    on_bug: Callable[[Exception], None] | None = None,
) -> dict[str, Any]:
    """Run a request's work, which builds its own proxy response (a redirect, a page...).

    A RequestError becomes its own status (reported to ``on_error``); anything else is a bug: 500 with a
    generic body, reported to ``on_bug`` (which must log without payloads: they may carry PHI).
    """
    try:
        return call()
    except RequestError as err:
        if on_error:
            on_error(err)
        return error_response(err)
    except Exception as exc:
        if on_bug:
            on_bug(exc)
        return json_response(500, {"error": "InternalError", "message": "unexpected error; it has been logged"})
