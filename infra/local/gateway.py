"""A local API Gateway: serves the template's routes to the real handlers in the event format each API uses.

REST APIs (AWS::Serverless::Api, payload 1.0) get the v1 proxy event, HTTP APIs (AWS::Serverless::HttpApi)
the v2 event unless the integration says payloadFormatVersion 1.0. The handler's response is translated back
the way API Gateway does it. An unknown route answers 404 ``{"message":"Not Found"}``.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from werkzeug.exceptions import ClientDisconnected
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from infra.local.runtime import Runtime
from infra.local.template import RouteSpec

log = logging.getLogger("qbsync.local")

# Seconds a client may stay silent while sending its request (or between keep-alive requests). Without it a
# client that announces a Content-Length and then stalls (slow loris) holds a thread forever.
READ_TIMEOUT_S = 30.0

_TEXT_TYPES = (
    "text/",
    "application/json",
    "application/xml",
    "application/x-www-form-urlencoded",
    "+json",
    "+xml",
)


@dataclass
class _CompiledRoute:
    spec: RouteSpec
    regex: re.Pattern[str]
    params: list[str]
    rank: tuple[int, int, int, int]


def _compile(route: RouteSpec) -> _CompiledRoute:
    if route.path == "$default":
        return _CompiledRoute(route, re.compile(r"^/.*$"), [], (3, 0, 0, 1))
    params: list[str] = []
    pattern = ""
    greedy = 0
    for part in re.split(r"(\{[^}]+\})", route.path):
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1]
            if name.endswith("+"):
                name, greedy = name[:-1], 1
                pattern += f"(?P<p{len(params)}>.+)"
            else:
                pattern += f"(?P<p{len(params)}>[^/]+)"
            params.append(name)
        else:
            pattern += re.escape(part)
    # Most specific first, as API Gateway does: static paths, then fewer variables, greedy last, ANY last.
    rank = (greedy, len(params), -len(route.path), 1 if route.method == "ANY" else 0)
    return _CompiledRoute(route, re.compile(f"^{pattern}/?$" if pattern != "/" else "^/$"), params, rank)


class Gateway:
    """One werkzeug server (threaded) serving ``routes`` on 127.0.0.1."""

    def __init__(self, routes: list[RouteSpec], runtime: Runtime, region: str, account_id: str) -> None:
        self.routes = sorted((_compile(r) for r in routes), key=lambda c: c.rank)
        self.runtime = runtime
        self.region = region
        self.account_id = account_id
        self.url = ""
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._binary_types: set[str] = set()

    def start(self, port: int = 0) -> Gateway:
        handler = type("TimedRequestHandler", (WSGIRequestHandler,), {"timeout": READ_TIMEOUT_S})
        self._server = make_server("127.0.0.1", port, self._wsgi, threaded=True, request_handler=handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="local-gateway", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        return self.handle(request)(environ, start_response)

    def match(self, method: str, path: str) -> tuple[RouteSpec, dict[str, str]] | None:
        for compiled in self.routes:
            if compiled.spec.method not in (method, "ANY"):
                continue
            m = compiled.regex.match(path)
            if m:
                values = {name: m.group(f"p{i}") for i, name in enumerate(compiled.params)}
                return compiled.spec, values
        return None

    def handle(self, request: Request) -> Response:
        found = self.match(request.method, request.path)
        if found is None:
            return _json_response(404, {"message": "Not Found"})
        route, params = found
        try:
            request.get_data(cache=True)  # the whole body before the function runs, as API Gateway does
        except (ClientDisconnected, TimeoutError, ConnectionError):  # werkzeug wraps a read timeout
            return _json_response(408, {"message": "Request Timeout"})
        event = (
            self._event_v1(request, route, params)
            if route.payload_version == "1.0"
            else self._event_v2(request, route, params)
        )
        try:
            result = self.runtime.invoke(route.function_id, event)
        except Exception:
            log.exception("function %s failed on %s %s", route.function_id, request.method, request.path)
            return _json_response(502, {"message": "Internal server error"})
        try:
            return _to_response(result, route.payload_version)
        except Exception:
            log.exception("function %s returned a malformed response", route.function_id)
            return _json_response(502, {"message": "Internal server error"})

    def _body(self, request: Request) -> tuple[str | None, bool]:
        raw = request.get_data(cache=True)
        if not raw:
            return None, False
        ctype = (request.content_type or "").lower()
        binary = bool(ctype) and not any(t in ctype for t in _TEXT_TYPES)
        if not binary:
            try:
                return raw.decode("utf-8"), False
            except UnicodeDecodeError:
                pass
        return base64.b64encode(raw).decode(), True

    def _context(self, request: Request, route: RouteSpec) -> dict[str, Any]:
        now = time.time()
        return {
            "accountId": self.account_id,
            "apiId": route.api_id.lower()[:10],
            "domainName": request.host,
            "domainPrefix": request.host.split(".")[0],
            "requestId": str(uuid.uuid4()),
            "stage": route.stage,
            "requestTimeEpoch": int(now * 1000),
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        }

    def _event_v1(self, request: Request, route: RouteSpec, params: dict[str, str]) -> dict[str, Any]:
        headers: dict[str, str] = {}
        multi_headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            headers[name] = value
            multi_headers.setdefault(name, []).append(value)
        query = {k: vs[-1] for k, vs in request.args.lists()}
        multi_query = {k: list(vs) for k, vs in request.args.lists()}
        body, is_b64 = self._body(request)
        ctx = self._context(request, route)
        ctx.update(
            {
                "resourceId": uuid.uuid4().hex[:6],
                "resourcePath": route.path,
                "httpMethod": request.method,
                "path": f"/{route.stage}{request.path}",
                "protocol": "HTTP/1.1",
                "extendedRequestId": ctx["requestId"],
                "identity": {
                    "sourceIp": request.remote_addr or "127.0.0.1",
                    "userAgent": request.headers.get("User-Agent"),
                    "accountId": None,
                    "caller": None,
                    "user": None,
                    "userArn": None,
                    "accessKey": None,
                    "apiKey": None,
                    "cognitoIdentityId": None,
                },
            }
        )
        return {
            "resource": route.path,
            "path": request.path,
            "httpMethod": request.method,
            "headers": headers or None,
            "multiValueHeaders": multi_headers or None,
            "queryStringParameters": query or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": params or None,
            "stageVariables": None,
            "requestContext": ctx,
            "body": body,
            "isBase64Encoded": is_b64,
        }

    def _event_v2(self, request: Request, route: RouteSpec, params: dict[str, str]) -> dict[str, Any]:
        headers: dict[str, str] = {}
        cookies: list[str] = []
        for name, value in request.headers.items():
            key = name.lower()
            if key == "cookie":
                cookies.extend(c.strip() for c in value.split(";") if c.strip())
                continue
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        route_key = "$default" if route.path == "$default" else f"{route.method} {route.path}"
        body, is_b64 = self._body(request)
        ctx = self._context(request, route)
        ctx.pop("requestTime")
        ctx.update(
            {
                "routeKey": route_key,
                "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
                "timeEpoch": ctx.pop("requestTimeEpoch"),
                "http": {
                    "method": request.method,
                    "path": request.path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": request.remote_addr or "127.0.0.1",
                    "userAgent": request.headers.get("User-Agent", ""),
                },
            }
        )
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": request.path,
            "rawQueryString": request.query_string.decode("latin-1"),
            "headers": headers,
            "requestContext": ctx,
            "isBase64Encoded": is_b64,
        }
        if cookies:
            event["cookies"] = cookies
        if request.args:
            event["queryStringParameters"] = {k: ",".join(vs) for k, vs in request.args.lists()}
        if params:
            event["pathParameters"] = params
        if body is not None:
            event["body"] = body
        return event


def _json_response(status: int, doc: Any) -> Response:
    return Response(json.dumps(doc), status=status, content_type="application/json")


def _to_response(result: Any, payload_version: str) -> Response:
    if payload_version == "2.0" and not (isinstance(result, dict) and "statusCode" in result):
        # HTTP API v2 infers a 200 JSON response from any other return value.
        body = result if isinstance(result, str) else json.dumps(result)
        return Response(body, status=200, content_type="application/json")
    if not isinstance(result, dict):
        raise ValueError("a REST API proxy integration must return a dict with statusCode")
    status = int(result.get("statusCode", 200))
    raw_body = result.get("body")
    if raw_body is None:
        data = b""
    elif result.get("isBase64Encoded"):
        data = base64.b64decode(raw_body)
    else:
        data = str(raw_body).encode()
    response = Response(data, status=status)
    response.headers.remove("Content-Type")
    for name, value in (result.get("headers") or {}).items():
        response.headers[name] = str(value)
    for name, values in (result.get("multiValueHeaders") or {}).items():
        response.headers.remove(name)
        for value in values:
            response.headers.add(name, str(value))
    for cookie in result.get("cookies") or []:
        response.headers.add("Set-Cookie", cookie)
    if "Content-Type" not in response.headers:
        response.headers["Content-Type"] = "application/json"
    return response
