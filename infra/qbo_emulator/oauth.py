"""OAuth 2.0 authorization server: apps, codes, access/refresh tokens with rotation, revocation."""

from __future__ import annotations

import base64
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from .store import Settings
from .util import Clock


class OAuthError(Exception):
    """Token endpoint error: RFC 6749 `error` code, description and HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


@dataclass
class App:
    client_id: str
    client_secret: str
    redirect_uris: list[str]


@dataclass
class Grant:
    """One connection (client_id x realm). Revoking any token of it ends the whole grant."""

    grant_id: str
    client_id: str
    realm_id: str
    scope: str
    created_at: float
    revoked: bool = False


@dataclass
class RefreshToken:
    grant_id: str
    expires_at: float
    hard_expires_at: float
    rotated_at: float | None = None  # set when a newer refresh token replaced this one


@dataclass
class AccessToken:
    grant_id: str
    expires_at: float


@dataclass
class Code:
    client_id: str
    redirect_uri: str
    realm_id: str
    scope: str
    expires_at: float
    used: bool = False


@dataclass
class OAuthState:
    apps: dict[str, App] = field(default_factory=dict)
    grants: dict[str, Grant] = field(default_factory=dict)
    codes: dict[str, Code] = field(default_factory=dict)
    refresh: dict[str, RefreshToken] = field(default_factory=dict)
    access: dict[str, AccessToken] = field(default_factory=dict)


class OAuthServer:
    def __init__(self, clock: Clock, settings: Settings) -> None:
        self.clock = clock
        self.settings = settings
        self.state = OAuthState()
        self.lock = threading.Lock()

    def reset(self, keep_apps: bool = True) -> None:
        with self.lock:
            apps = self.state.apps if keep_apps else {}
            self.state = OAuthState(apps=apps)

    def register_app(self, client_id: str, client_secret: str, redirect_uris: list[str]) -> App:
        with self.lock:
            app = App(client_id, client_secret, list(redirect_uris))
            self.state.apps[client_id] = app
            return app

    # ---- authorize ---------------------------------------------------------------------------------------
    def authorize(self, client_id: str, redirect_uri: str, scope: str, realm_id: str) -> str:
        """Issue a single-use authorization code.

        Raises:
            OAuthError: invalid_client (unknown app) or invalid_request (redirect_uri not registered).
        """
        with self.lock:
            app = self.state.apps.get(client_id)
            if app is None:
                raise OAuthError("invalid_client", "Unknown client_id")
            if redirect_uri not in app.redirect_uris:
                raise OAuthError("invalid_request", "The redirect_uri does not match a registered redirect URI")
            code = "AB" + secrets.token_urlsafe(36)
            self.state.codes[code] = Code(client_id, redirect_uri, realm_id, scope, self.clock.now() + 300)
            return code

    # ---- token endpoint ------------------------------------------------------------------------------------
    def client_from_basic(self, header: str | None) -> App:
        """Raises: OAuthError invalid_client (401) for a missing/wrong Basic header."""
        if not header or not header.startswith("Basic "):
            raise OAuthError("invalid_client", "Client authentication failed", 401)
        try:
            cid, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        except Exception as exc:
            raise OAuthError("invalid_client", "Client authentication failed", 401) from exc
        app = self.state.apps.get(cid)
        if app is None or not secrets.compare_digest(app.client_secret, secret):
            raise OAuthError("invalid_client", "Client authentication failed", 401)
        return app

    def _issue(self, grant: Grant, hard_expires_at: float, include_hard: bool) -> dict[str, Any]:
        now = self.clock.now()
        access = "eyJ" + secrets.token_urlsafe(48)
        refresh = "RT1-" + secrets.token_urlsafe(30)
        self.state.access[access] = AccessToken(grant.grant_id, now + self.settings.access_token_ttl_s)
        self.state.refresh[refresh] = RefreshToken(
            grant.grant_id, now + self.settings.refresh_token_ttl_s, hard_expires_at
        )
        body: dict[str, Any] = {
            "token_type": "bearer",
            "access_token": access,
            "expires_in": self.settings.access_token_ttl_s,
            "refresh_token": refresh,
            "x_refresh_token_expires_in": int(min(self.settings.refresh_token_ttl_s, hard_expires_at - now)),
        }
        if include_hard:
            body["x_refresh_token_hard_expires_in"] = int(hard_expires_at - now)
        return body

    def token(self, auth_header: str | None, form: dict[str, str], include_hard: bool) -> dict[str, Any]:
        """The token endpoint (authorization_code and refresh_token grants).

        Raises:
            OAuthError: invalid_client, unsupported_grant_type, invalid_request, invalid_grant.
        """
        with self.lock:
            app = self.client_from_basic(auth_header)
            grant_type = form.get("grant_type")
            now = self.clock.now()
            if grant_type == "authorization_code":
                code = self.state.codes.get(form.get("code", ""))
                if code is None or code.used or code.expires_at < now or code.client_id != app.client_id:
                    if code is not None and code.used:
                        # Replaying a code revokes what it produced (RFC 6749 10.5 advice).
                        code.used = True
                    raise OAuthError("invalid_grant", "Invalid authorization code")
                if form.get("redirect_uri") != code.redirect_uri:
                    raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
                code.used = True
                grant = Grant("G" + secrets.token_hex(8), app.client_id, code.realm_id, code.scope, now)
                self.state.grants[grant.grant_id] = grant
                return self._issue(grant, now + self.settings.refresh_token_hard_ttl_s, include_hard)
            if grant_type == "refresh_token":
                value = form.get("refresh_token", "")
                rt = self.state.refresh.get(value)
                if rt is None:
                    raise OAuthError("invalid_grant", "Incorrect or invalid refresh token")
                grant = self.state.grants[rt.grant_id]
                if grant.client_id != app.client_id:
                    raise OAuthError("invalid_grant", "Incorrect or invalid refresh token")
                if grant.revoked:
                    raise OAuthError("invalid_grant", "Token has been expired or revoked")
                if rt.expires_at < now or rt.hard_expires_at < now:
                    raise OAuthError("invalid_grant", "Token has been expired or revoked")
                if rt.rotated_at is not None and now - rt.rotated_at > self.settings.refresh_grace_s:
                    raise OAuthError("invalid_grant", "Incorrect or invalid refresh token")
                body = self._issue(grant, rt.hard_expires_at, include_hard)
                if rt.rotated_at is None:
                    rt.rotated_at = now
                return body
            raise OAuthError("unsupported_grant_type", f"Unsupported grant_type {grant_type!r}")

    def revoke(self, auth_header: str | None, token: str) -> None:
        """Revoke the grant a refresh or access token belongs to (unknown tokens are accepted silently).

        Raises:
            OAuthError: invalid_client (401).
        """
        with self.lock:
            self.client_from_basic(auth_header)
            held = self.state.refresh.get(token) or self.state.access.get(token)
            if held is not None:
                self.state.grants[held.grant_id].revoked = True

    # ---- bearer check --------------------------------------------------------------------------------------
    def realm_of(self, bearer: str) -> tuple[str | None, str]:
        """(realm_id, "") for a valid access token, else (None, reason)."""
        with self.lock:
            tok = self.state.access.get(bearer)
            if tok is None:
                return None, "unknown token"
            grant = self.state.grants[tok.grant_id]
            if grant.revoked:
                return None, "token revoked"
            if tok.expires_at <= self.clock.now():
                return None, "token expired"
            return grant.realm_id, ""

    def revoke_realm(self, realm_id: str) -> int:
        with self.lock:
            n = 0
            for grant in self.state.grants.values():
                if grant.realm_id == realm_id and not grant.revoked:
                    grant.revoked = True
                    n += 1
            return n

    def expire_realm(self, realm_id: str) -> int:
        with self.lock:
            n = 0
            now = self.clock.now()
            for tok in self.state.access.values():
                if self.state.grants[tok.grant_id].realm_id == realm_id and tok.expires_at > now:
                    tok.expires_at = now
                    n += 1
            return n

    def issue_direct(self, realm_id: str, client_id: str) -> dict[str, Any]:
        """Issue a token pair without the browser dance (control API convenience)."""
        with self.lock:
            now = self.clock.now()
            grant = Grant("G" + secrets.token_hex(8), client_id, realm_id, "com.intuit.quickbooks.accounting", now)
            self.state.grants[grant.grant_id] = grant
            return self._issue(grant, now + self.settings.refresh_token_hard_ttl_s, True)
