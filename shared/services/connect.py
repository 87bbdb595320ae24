"""Connecting a QuickBooks company: connect (redirect to Intuit), callback (state check, code exchange,
tokens to the realm's secret, company summary, tenant link) and disconnect (revoke, hold work).

Pages shown to the admin are plain HTML with no token material and no stack traces.
"""

from __future__ import annotations

import html
import secrets as pysecrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.adapters import secrets
from shared.adapters.connections import ConnectionRepository, OAuthStates
from shared.adapters.qbo.client import QboClient
from shared.adapters.qbo.faults import QboFault
from shared.adapters.qbo.oauth import IntuitOAuth, intuit_oauth
from shared.adapters.qbo.tokens import TokenManager, token_secret_id
from shared.adapters.tenants import TenantRepository
from shared.domain.errors import BadRequest, NotFound, QbsyncError
from shared.domain.oauth import OAuthStateInvalid, TokenSet, company_summary
from shared.observability import count, logger


@dataclass(frozen=True)
class Page:
    status: int
    html: str


@dataclass(frozen=True)
class Connected:
    tenant_id: str
    realm_id: str
    company_name: str


class ConnectService:
    def __init__(
        self,
        *,
        oauth: Callable[[], IntuitOAuth] = intuit_oauth,
        connections: ConnectionRepository | None = None,
        states: OAuthStates | None = None,
        tenants: TenantRepository | None = None,
        tokens: TokenManager | None = None,
        client_factory: Callable[[str, TokenManager], QboClient] | None = None,
    ) -> None:
        self._oauth = oauth
        self._connections = connections or ConnectionRepository()
        self._states = states or OAuthStates()
        self._tenants = tenants or TenantRepository()
        self._tokens = tokens or TokenManager(connections=self._connections)
        self._client_factory = client_factory or (lambda realm, tm: QboClient(realm, tokens=tm))

    # ------------------------------------------------------------------ connect
    def authorize_url(self, tenant_id: str | None) -> str:
        """Intuit's consent URL with a fresh single-use state bound to the tenant (10 minutes).

        Raises BadRequest (no tenant), NotFound (unknown tenant), QboFault (app not configured).
        """
        if not tenant_id:
            raise BadRequest("the tenant query parameter is required", field="tenant")
        if self._tenants.get(tenant_id) is None:
            raise NotFound(f"unknown tenant '{tenant_id}'", field="tenant")
        state = pysecrets.token_urlsafe(32)
        self._states.create(state, tenant_id)
        logger().info("qbo connect started", extra={"tenant_id": tenant_id})
        return self._oauth().authorization_url(state)

    # ------------------------------------------------------------------ callback
    def callback(self, params: Mapping[str, str]) -> Connected:
        """Finish a connect. Raises OAuthStateInvalid (forged / expired / replayed / missing),
        BadRequest (the admin declined), QboFault (Intuit or QBO refused or failed)."""
        state = params.get("state") or ""
        if params.get("error"):
            if state:
                self._states.consume(state)
            raise BadRequest("QuickBooks access was not granted.", field="error", reason=params.get("error"))
        code, realm_id = params.get("code") or "", params.get("realmId") or ""
        if not (code and state and realm_id):
            raise OAuthStateInvalid("missing")
        tenant_id = self._states.consume(state)
        existing = self._connections.get(realm_id, consistent=True)
        version = max(self._tokens.stored_version(realm_id), existing.token_version if existing else 0) + 1
        tokens = self._oauth().exchange_code(code, realm_id, version=version)
        # Tokens are durable before anything else uses them.
        self._tokens.store(realm_id, tokens)
        client = self._client_factory(realm_id, self._tokens)
        company = company_summary(client.company_info(), client.preferences())
        self._connections.upsert_connected(
            realm_id, secret_id=token_secret_id(realm_id), tokens=tokens, company=company
        )
        self._connections.link_tenant(tenant_id, realm_id)
        count("QboConnected")
        logger().info("qbo connected", extra={"tenant_id": tenant_id, "realm_id": realm_id})
        return Connected(tenant_id, realm_id, str(company.get("CompanyName") or realm_id))

    def callback_page(self, params: Mapping[str, str]) -> Page:
        """``callback`` as the page the admin's browser shows (never raises)."""
        try:
            done = self.callback(params)
        except OAuthStateInvalid as exc:
            logger().warning("qbo callback refused", extra={"reason": exc.reason})
            count("QboConnectRefused", reason=exc.reason)
            return _page(400, "QuickBooks was not connected", f"{exc.message} Start again from qbsync.")
        except BadRequest as exc:
            return _page(400, "QuickBooks was not connected", exc.message)
        except QboFault as exc:
            logger().warning(
                "qbo callback failed",
                extra={"fault": type(exc).__name__, "qbo_code": exc.code, "intuit_tid": exc.intuit_tid},
            )
            return _page(
                502, "QuickBooks was not connected", "QuickBooks did not complete the connection. Please try again."
            )
        except QbsyncError as exc:
            return _page(400, "QuickBooks was not connected", exc.message)
        except Exception:
            logger().exception("qbo callback crashed")
            return _page(500, "QuickBooks was not connected", "Something went wrong on our side. Please try again.")
        return _page(
            200,
            "QuickBooks connected",
            f"{done.company_name} is connected to qbsync. You can close this window.",
        )

    # ------------------------------------------------------------------ disconnect
    def disconnect(self, tenant_id: str | None) -> dict[str, Any]:
        """Revoke the realm's tokens at Intuit, clear them from the secret, mark the connection
        ``disconnected`` (holds outgoing work of every tenant on that company).

        Raises BadRequest / NotFound (tenant unknown or not connected), QboFault (Intuit unavailable).
        """
        if not tenant_id:
            raise BadRequest("tenant is required", field="tenant")
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            raise NotFound(f"unknown tenant '{tenant_id}'", field="tenant")
        realm_id = tenant.realm_id
        if not realm_id:
            raise NotFound(f"tenant '{tenant_id}' has no QuickBooks connection", field="tenant")
        try:
            current: TokenSet | None = TokenSet.from_secret(secrets.get_json(token_secret_id(realm_id), max_age_s=0))
        except KeyError:
            current = None
        if current is not None:
            self._oauth().revoke(current.refresh_token)
            secrets.put_json(token_secret_id(realm_id), {"token_version": current.token_version + 1})
        self._tokens.forget(realm_id)
        self._connections.mark_disconnected(realm_id)
        count("QboDisconnected")
        logger().info("qbo disconnected", extra={"tenant_id": tenant_id, "realm_id": realm_id})
        return {"tenant": tenant_id, "realm_id": realm_id, "status": "disconnected"}


def _page(status: int, title: str, message: str) -> Page:
    t, m = html.escape(title), html.escape(message)
    body = (
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        f"{t}</title></head><body><h1>{t}</h1><p>{m}</p></body></html>"
    )
    return Page(status, body)
