"""The emulator process: shared state, WSGI routing (API, OAuth, control API) and the threaded server."""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from . import api, faults
from .control_routes import handle_control, new_counters
from .oauth import OAuthError, OAuthServer
from .store import Limits, Realm, Settings
from .util import Clock, dumps, fmt_ts, new_tid
from .webhooks import WebhookDispatcher

DEFAULT_REALM = "9341453050698563"


class Emulator:
    """All emulator state. One instance per server; safe to use from the server's worker threads."""

    def __init__(
        self,
        *,
        client_id: str = "emulator-client",
        client_secret: str = "emulator-secret",  # noqa: S107
        redirect_uris: list[str] | None = None,
        webhook_url: str | None = None,
        verifier_token: str = "emulator-verifier-token",  # noqa: S107
        webhook_format: str = "cloudevents",
    ) -> None:
        self.clock = Clock()
        self.settings = Settings()
        self.limits = Limits()
        self.limiter = faults.Limiter(self.limits, self.clock)
        self.oauth = OAuthServer(self.clock, self.settings)
        self.webhooks = WebhookDispatcher(self.clock)
        self.realms: dict[str, Realm] = {}
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.stats: dict[str, Any] = {}
        self.base_url = ""
        self._defaults = {
            "client_id": client_id,
            "client_secret": client_secret,
            "redirect_uris": redirect_uris or ["http://localhost:8000/callback"],
            "webhook": {"url": webhook_url, "verifier_token": verifier_token, "format": webhook_format},
        }
        self.reset()

    def reset(self) -> None:
        """Back to a fresh process: no realms/tokens/logs, default settings, limits and webhook config."""
        with self.lock:
            self.realms.clear()
            self.requests.clear()
            self.stats = new_counters()
        self.clock.reset()
        self.settings.__init__()  # type: ignore[misc]
        self.limits.__init__()  # type: ignore[misc]
        self.limiter.reset()
        self.oauth.reset(keep_apps=False)
        d = self._defaults
        self.oauth.register_app(d["client_id"], d["client_secret"], d["redirect_uris"])
        self.webhooks.reset()
        self.webhooks.configure({k: v for k, v in d["webhook"].items() if v is not None})

    def create_realm(
        self,
        realm_id: str | None = None,
        company_name: str | None = None,
        preferences: dict[str, Any] | None = None,
        sales_tax_rate: Any = None,
    ) -> Realm:
        with self.lock:
            rid = realm_id or str(9341453050698563 + len(self.realms) + 1)
            if rid in self.realms:
                return self.realms[rid]
            rate = Decimal(str(sales_tax_rate)) if sales_tax_rate is not None else None
            realm = Realm(
                rid,
                company_name or f"Sandbox Company {rid[-4:]}",
                self.clock,
                self.settings,
                preferences=preferences,
                sales_tax_rate=rate,
            )
            self.realms[rid] = realm
            return realm

    # ---- logging -----------------------------------------------------------------------------------------
    def log_request(self, req: Request, realm_id: str | None, kind: str, entity: str | None) -> dict[str, Any]:
        entry = {
            "seq": 0,
            "time": self.clock.now(),
            "method": req.method,
            "path": req.path,
            "query": req.query_string.decode("latin-1"),
            "body": req.get_data(as_text=True),  # whole: scans for PHI must see every byte QuickBooks received
            "requestid": req.args.get("requestid"),
            "status": None,
            "realm": realm_id,
            "kind": kind,
            "entity": entity,
            "intuit_tid": new_tid(),
        }
        if kind == "batch":
            entry["items"] = entry["body"].count('"bId"')
        with self.lock:
            entry["seq"] = len(self.requests) + 1
            self.requests.append(entry)
            self.stats["requests"] += 1
        return entry

    def count(self, kind: str, entity: str | None = None) -> None:
        key = {"read": "reads", "write": "writes", "query": "queries"}.get(kind, kind)
        with self.lock:
            self.stats[key] = self.stats.get(key, 0) + 1
            if entity:
                self.stats["by_entity"][entity] = self.stats["by_entity"].get(entity, 0) + 1

    # ---- discovery / oauth ---------------------------------------------------------------------------------
    def discovery(self) -> dict[str, Any]:
        u = self.base_url
        return {
            "issuer": f"{u}/op/v1",
            "authorization_endpoint": f"{u}/connect/oauth2",
            "token_endpoint": f"{u}/oauth2/v1/tokens/bearer",
            "userinfo_endpoint": f"{u}/v1/openid_connect/userinfo",
            "revocation_endpoint": f"{u}/v2/oauth2/tokens/revoke",
            "jwks_uri": f"{u}/op/v1/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": [
                "openid",
                "email",
                "profile",
                "address",
                "phone",
                "com.intuit.quickbooks.accounting",
                "com.intuit.quickbooks.payment",
            ],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "claims_supported": ["aud", "exp", "iat", "iss", "realmid", "sub"],
        }


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    resp = Response(dumps(body), status=status, content_type="application/json")
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def oauth_error(err: OAuthError) -> Response:
    return json_response({"error": err.error, "error_description": err.description}, err.status)


def handle_oauth(emu: Emulator, req: Request) -> Response | None:
    path = req.path.rstrip("/")
    if path in (
        "/.well-known/openid_configuration",
        "/.well-known/openid_sandbox_configuration",
        "/.well-known/openid-configuration",
    ):
        return json_response(emu.discovery())
    if path == "/connect/oauth2" and req.method == "GET":
        args = req.args
        entry = emu.log_request(req, args.get("realm_id"), "oauth", None)
        if args.get("response_type") != "code":
            return json_response({"error": "unsupported_response_type"}, 400)
        realm_id = args.get("realm_id") or DEFAULT_REALM
        try:
            code = emu.oauth.authorize(
                args.get("client_id", ""), args.get("redirect_uri", ""), args.get("scope", ""), realm_id
            )
        except OAuthError as err:
            entry["status"] = 400
            return oauth_error(err)
        emu.create_realm(realm_id)
        params = {"code": code, "state": args.get("state", ""), "realmId": realm_id}
        redirect = args["redirect_uri"] + ("&" if "?" in args["redirect_uri"] else "?") + urlencode(params)
        entry["status"] = 302
        return Response("", status=302, headers={"Location": redirect})
    if path == "/oauth2/v1/tokens/bearer" and req.method == "POST":
        entry = emu.log_request(req, None, "oauth", None)
        include_hard = req.headers.get("x-include-refresh-token-hard-expires-in", "").lower() == "true"
        try:
            body = emu.oauth.token(req.headers.get("Authorization"), req.form.to_dict(), include_hard)
        except OAuthError as err:
            entry["status"] = err.status
            return oauth_error(err)
        entry["status"] = 200
        return json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
    if path == "/v2/oauth2/tokens/revoke" and req.method == "POST":
        entry = emu.log_request(req, None, "oauth", None)
        try:
            token = json.loads(req.get_data() or b"{}").get("token", "")
        except ValueError:
            token = req.form.get("token", "")
        try:
            emu.oauth.revoke(req.headers.get("Authorization"), token)
        except OAuthError as err:
            entry["status"] = err.status
            return oauth_error(err)
        entry["status"] = 200
        return Response("", status=200)
    if path == "/v1/openid_connect/userinfo":
        auth = req.headers.get("Authorization", "")
        realm, _ = emu.oauth.realm_of(auth[7:]) if auth.startswith("Bearer ") else (None, "")
        if realm is None:
            return json_response({"error": "invalid_token"}, 401)
        return json_response(
            {
                "sub": f"emulator-user-{realm}",
                "email": "owner@example.com",
                "emailVerified": True,
                "givenName": "Emu",
                "familyName": "Lator",
            }
        )
    if path == "/op/v1/jwks":
        return json_response({"keys": []})
    return None


class App:
    """WSGI entry point."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        req = Request(environ)
        try:
            resp = self.route(req)
        except api.Dropped:
            api.drop_connection(environ)
            resp = Response("", status=200, headers={"Connection": "close"})
        except Exception as exc:  # a bug in the emulator must still look like a QBO SystemFault
            resp = json_response(
                {
                    "Fault": {
                        "Error": [
                            {
                                "Message": "An application error has occurred",
                                "Detail": f"{type(exc).__name__}: {exc}",
                                "code": "10000",
                            }
                        ],
                        "type": "SystemFault",
                    },
                    "time": fmt_ts(self.emu.clock.now(), True),
                },
                500,
            )
        if "intuit_tid" not in resp.headers:
            resp.headers["intuit_tid"] = new_tid()
        return resp(environ, start_response)

    def route(self, req: Request) -> Response:
        path = req.path
        if path.startswith("/_emulator/") or path == "/_emulator":
            return handle_control(self.emu, req)
        if path.startswith("/v3/company/"):
            parts = [p for p in path.split("/")[3:] if p]
            if not parts:
                return json_response({"error": "not found"}, 404)
            return api.handle_api(self.emu, req, parts[0], parts[1:])
        resp = handle_oauth(self.emu, req)
        if resp is not None:
            return resp
        return json_response({"error": "not found", "path": path}, 404)


class _QuietHandler(WSGIRequestHandler):
    """No per-request access log on stderr (the control API has the request log)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class EmulatorServer:
    """Threaded WSGI server on 127.0.0.1 in a background thread.

    `EmulatorServer(port=0).start()` binds a free port; `.url` is the base URL; `.stop()` shuts it down.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> None:
        self.host = host
        self.port = port
        self.emulator = Emulator(**kwargs)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> EmulatorServer:
        self._server = make_server(
            self.host, self.port, App(self.emulator), threaded=True, request_handler=_QuietHandler
        )
        self._server.daemon_threads = True
        self.port = self._server.server_port
        self.emulator.base_url = self.url
        self.emulator.webhooks.start()
        self._thread = threading.Thread(target=self._server.serve_forever, name="qbo-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.emulator.webhooks.stop()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def control(self) -> Any:
        from .control import EmulatorControl

        return EmulatorControl(self.url)
