"""A thin wrapper around intuit-oauth's ``AuthClient``: authorize URL, code exchange, refresh, revoke.

The AuthClient constructor fetches Intuit's discovery document over HTTP, so one client is created lazily
and cached per container. It is a stateful ``requests.Session`` (it stores the last tokens on itself), so
token operations are serialised through a lock and every result is copied out at once.
Only the OAuth function and the workers that refresh tokens import this module (cold start).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from intuitlib.client import AuthClient
from intuitlib.enums import Scopes
from intuitlib.exceptions import AuthClientError

from shared.adapters import secrets
from shared.adapters.qbo.faults import QboReconnect, QboRetryable
from shared.config import Settings, get_settings
from shared.domain.oauth import TokenSet

OAUTH_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class AppCredentials:
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str


def load_app_credentials(settings: Settings | None = None) -> AppCredentials:
    """The Intuit app's keys from the ``{prefix}/qbo-app`` secret.

    Raises QboReconnect naming the secret when the keys are not set yet (ops must put them there).
    """
    s = settings or get_settings()
    try:
        value = secrets.get_json(s.oauth_app_secret_id, max_age_s=300)
    except KeyError:
        value = {}
    creds = AppCredentials(
        client_id=str(value.get("client_id") or ""),
        client_secret=str(value.get("client_secret") or ""),
        redirect_uri=str(value.get("redirect_uri") or s.oauth_redirect_url),
    )
    if not (creds.client_id and creds.client_secret and creds.redirect_uri):
        raise QboReconnect(
            "the Intuit app credentials are not configured",
            code="app-not-configured",
            detail=f"put client_id, client_secret and redirect_uri into the secret {s.oauth_app_secret_id!r}",
        )
    return creds


class _TimedAuthClient(AuthClient):  # type: ignore[misc]
    """intuit-oauth sends without a timeout; a hung token endpoint must not eat a Lambda's time."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", OAUTH_TIMEOUT_S)
        return super().request(*args, **kwargs)


class IntuitOAuth:
    def __init__(self, creds: AppCredentials, settings: Settings | None = None) -> None:
        s = settings or get_settings()
        environment = s.qbo_discovery_url or ("production" if s.qbo_environment == "production" else "sandbox")
        self._lock = threading.Lock()
        try:
            self._client = _TimedAuthClient(creds.client_id, creds.client_secret, creds.redirect_uri, environment)
        except AuthClientError as exc:
            raise QboRetryable("the Intuit discovery document could not be read", http_status=exc.status_code) from None
        self._client.include_refresh_token_hard_expires_in = True

    def authorization_url(self, state: str) -> str:
        """Intuit's consent page URL for the accounting scope with our own (CSPRNG) ``state``."""
        with self._lock:
            url: str = self._client.get_authorization_url([Scopes.ACCOUNTING], state_token=state)
            self._client.state_token = None
            return url

    def exchange_code(self, code: str, realm_id: str, *, version: int) -> TokenSet:
        """Raises QboReconnect when Intuit refuses the code (invalid_grant), QboRetryable otherwise."""
        with self._lock:
            now = time.time()
            try:
                self._client.get_bearer_token(code, realm_id=realm_id)
            except AuthClientError as exc:
                raise _mapped(exc, "the authorization code was refused") from None
            return self._take_tokens(now, version)

    def refresh(self, refresh_token: str, *, version: int) -> TokenSet:
        """Raises QboReconnect on invalid_grant (revoked / rotated / expired), QboRetryable otherwise."""
        with self._lock:
            now = time.time()
            try:
                self._client.refresh(refresh_token=refresh_token)
            except AuthClientError as exc:
                raise _mapped(exc, "the refresh token was refused") from None
            return self._take_tokens(now, version)

    def revoke(self, token: str) -> None:
        """Revoke the grant a token belongs to. Raises QboRetryable when Intuit does not confirm it."""
        with self._lock:
            try:
                self._client.revoke(token=token)
            except AuthClientError as exc:
                raise _mapped(exc, "the token could not be revoked") from None

    def _take_tokens(self, now: float, version: int) -> TokenSet:
        c = self._client
        body = {
            "access_token": c.access_token,
            "refresh_token": c.refresh_token,
            "expires_in": c.expires_in,
            "x_refresh_token_expires_in": c.x_refresh_token_expires_in,
            "x_refresh_token_hard_expires_in": c.x_refresh_token_hard_expires_in,
        }
        # Do not leave tokens on the shared client.
        c.access_token = c.refresh_token = c.id_token = None
        c.x_refresh_token_hard_expires_in = None
        return TokenSet.from_token_response(body, now=now, version=version)


def _mapped(exc: AuthClientError, what: str) -> QboReconnect | QboRetryable:
    """AuthClientError → our fault, by the RFC 6749 ``error`` code. The body is never put in the message."""
    error = ""
    try:
        body = exc.response.json()
        error = str(body.get("error", "")) if isinstance(body, dict) else ""
    except ValueError:
        pass
    tid = exc.intuit_tid or ""
    if error == "invalid_grant":
        return QboReconnect(f"{what}: invalid_grant", code="invalid_grant", http_status=exc.status_code, intuit_tid=tid)
    if error == "invalid_client":
        return QboReconnect(
            f"{what}: invalid_client (check the app keys)",
            code="invalid_client",
            http_status=exc.status_code,
            intuit_tid=tid,
        )
    return QboRetryable(
        f"{what}: HTTP {exc.status_code} {error}".strip(),
        code=error or "oauth",
        http_status=exc.status_code,
        intuit_tid=tid,
    )


_build_lock = threading.Lock()


@lru_cache(maxsize=1)
def _cached() -> IntuitOAuth:
    return IntuitOAuth(load_app_credentials())


def intuit_oauth() -> IntuitOAuth:
    """The container's IntuitOAuth (created on first use: it fetches the discovery document)."""
    with _build_lock:
        return _cached()


def reset_oauth() -> None:
    """Tests: forget the cached client (credentials or discovery URL changed)."""
    _cached.cache_clear()
