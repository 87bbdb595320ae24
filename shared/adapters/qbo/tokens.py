"""TokenManager: per-realm access tokens from Secrets Manager, refreshed by exactly one worker at a time.

Storage: one secret per realm, ``{SECRETS_PREFIX}/realms/{realm}/tokens`` = TokenSet JSON
(access_token, refresh_token, access_expires_at, refresh_expires_at, refresh_hard_expires_at, token_version).

Refresh (5 min before expiry, or after a 401):
1. one thread per container (in-process lock), one worker per realm overall (DynamoDB lease ``LOCK#refresh``);
2. the lock holder re-reads the secret: if the version moved on, someone else refreshed — use theirs;
3. otherwise refresh at Intuit, save the rotated refresh token to the secret FIRST, then publish the new
   ``token_version`` on the connection row; only then use the new access token;
4. workers that did not get the lock poll the connection's ``token_version`` and then read the secret.
On invalid_grant the secret is re-read (a concurrent refresher may have rotated the token); only if it is
unchanged is the connection marked ``needs_reconnect`` and QboReconnect raised.
Token values never go to logs or exception messages.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Protocol

from shared.adapters import secrets
from shared.adapters.connections import ConnectionRepository, RealmLocks
from shared.adapters.qbo.faults import QboReconnect, QboRetryable
from shared.domain.oauth import TokenSet
from shared.observability import count, logger

REFRESH_MARGIN_S = 300.0
LOCK_NAME = "refresh"


def token_secret_id(realm_id: str) -> str:
    return secrets.secret_name("realms", realm_id, "tokens")


class Refresher(Protocol):
    def refresh(self, refresh_token: str, *, version: int) -> TokenSet: ...


class TokenManager:
    """Implements ``AccessTokens`` for QboClient. One per container is enough (thread-safe)."""

    def __init__(
        self,
        *,
        oauth: Refresher | None = None,
        connections: ConnectionRepository | None = None,
        locks: RealmLocks | None = None,
        margin_s: float = REFRESH_MARGIN_S,
        lock_lease_s: float = 30.0,
        wait_timeout_s: float = 25.0,
        poll_s: float = 0.1,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._oauth = oauth
        self._connections = connections or ConnectionRepository()
        self._locks = locks or RealmLocks()
        self._margin_s = margin_s
        self._lease_s = lock_lease_s
        self._wait_timeout_s = wait_timeout_s
        self._poll_s = poll_s
        self._clock = clock
        self._sleep = sleep
        self._cache: dict[str, TokenSet] = {}
        self._realm_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.refreshes = 0  # refreshes this manager performed at Intuit (observability, tests)

    # ------------------------------------------------------------------ AccessTokens
    def access_token(self, realm_id: str) -> str:
        """A valid access token (cached; refreshed 5 min before expiry).

        Raises QboReconnect if the realm has no tokens or Intuit refuses the refresh token,
        QboRetryable if a refresh elsewhere did not finish in time or Intuit is unavailable.
        """
        hit = self._cache.get(realm_id)
        if hit is not None and hit.access_valid(self._clock(), self._margin_s):
            return hit.access_token
        with self._realm_lock(realm_id):
            hit = self._cache.get(realm_id)
            if hit is not None and hit.access_valid(self._clock(), self._margin_s):
                return hit.access_token
            stored = self._read(realm_id)
            if stored.access_valid(self._clock(), self._margin_s):
                self._cache[realm_id] = stored
                return stored.access_token
            return self._refresh(realm_id, seen=stored).access_token

    def refresh_after_401(self, realm_id: str, rejected: str) -> str:
        """A new access token after QBO rejected ``rejected``: refreshes unless another worker already did.

        Raises like ``access_token``.
        """
        with self._realm_lock(realm_id):
            hit = self._cache.get(realm_id)
            if hit is not None and hit.access_token != rejected and hit.access_valid(self._clock()):
                return hit.access_token
            stored = self._read(realm_id)
            if stored.access_token != rejected and stored.access_valid(self._clock()):
                self._cache[realm_id] = stored
                return stored.access_token
            return self._refresh(realm_id, seen=stored, force=True).access_token

    # ------------------------------------------------------------------ storage
    def store(self, realm_id: str, tokens: TokenSet) -> None:
        """Save a token set (connect flow) and cache it."""
        secrets.put_json(token_secret_id(realm_id), tokens.to_secret(), description=f"QBO tokens of realm {realm_id}")
        self._cache[realm_id] = tokens

    def stored_version(self, realm_id: str) -> int:
        """The token_version in the realm's secret (0 when there is none)."""
        try:
            return int(secrets.get_json(token_secret_id(realm_id), max_age_s=0).get("token_version") or 0)
        except KeyError:
            return 0

    def forget(self, realm_id: str) -> None:
        self._cache.pop(realm_id, None)
        secrets.forget(token_secret_id(realm_id))

    def _read(self, realm_id: str) -> TokenSet:
        try:
            value = secrets.get_json(token_secret_id(realm_id), max_age_s=0)
        except KeyError:
            value = {}
        tokens = TokenSet.from_secret(value)
        if tokens is None:
            raise QboReconnect("QuickBooks is not connected for this company", code="not-connected")
        return tokens

    # ------------------------------------------------------------------ refresh
    def _refresh(self, realm_id: str, *, seen: TokenSet, force: bool = False) -> TokenSet:
        owner = uuid.uuid4().hex
        deadline = self._clock() + self._wait_timeout_s
        while True:
            if self._locks.try_acquire(realm_id, LOCK_NAME, owner, self._lease_s):
                try:
                    return self._refresh_locked(realm_id, seen=seen, force=force)
                finally:
                    self._locks.release(realm_id, LOCK_NAME, owner)
            # Another worker is refreshing: wait for its new version (or for its lease to lapse).
            newer = self._wait_for_version(realm_id, seen.token_version, deadline)
            if newer is not None:
                return newer
            if self._clock() >= deadline:
                raise QboRetryable("a QuickBooks token refresh elsewhere did not finish in time", code="refresh-wait")

    def _wait_for_version(self, realm_id: str, seen_version: int, deadline: float) -> TokenSet | None:
        """Poll the connection's token_version until it passes ``seen_version``; None on lease timeout."""
        lease_end = self._clock() + self._lease_s
        while self._clock() < min(deadline, lease_end):
            self._sleep(self._poll_s)
            if self._connections.token_version(realm_id) > seen_version:
                latest = self._read(realm_id)
                self._cache[realm_id] = latest
                return latest
        return None

    def _refresh_locked(self, realm_id: str, *, seen: TokenSet, force: bool) -> TokenSet:
        current = self._read(realm_id)
        if current.token_version > seen.token_version and current.access_valid(self._clock()):
            self._cache[realm_id] = current  # someone refreshed while we waited for the lock
            return current
        if not force and current.access_valid(self._clock(), self._margin_s):
            self._cache[realm_id] = current
            return current
        try:
            fresh = self._oauth_client().refresh(current.refresh_token, version=current.token_version + 1)
        except QboReconnect as exc:
            return self._after_invalid_grant(realm_id, used=current, exc=exc)
        self._save_refreshed(realm_id, fresh)
        return fresh

    def _after_invalid_grant(self, realm_id: str, *, used: TokenSet, exc: QboReconnect) -> TokenSet:
        latest = self._read(realm_id)
        if latest.refresh_token != used.refresh_token:
            # A concurrent refresher rotated it after our read: theirs is the live one.
            if latest.access_valid(self._clock(), self._margin_s):
                self._cache[realm_id] = latest
                return latest
            try:
                fresh = self._oauth_client().refresh(latest.refresh_token, version=latest.token_version + 1)
            except QboReconnect as again:
                exc = again
            else:
                self._save_refreshed(realm_id, fresh)
                return fresh
        self._cache.pop(realm_id, None)
        changed = self._connections.mark_needs_reconnect(realm_id)
        logger().warning(
            "qbo connection needs reconnect",
            extra={"realm_id": realm_id, "reason": exc.code, "intuit_tid": exc.intuit_tid, "changed": changed},
        )
        count("QboReconnectNeeded")
        raise QboReconnect(
            "QuickBooks refused the refresh token: reconnect the company",
            code=exc.code or "invalid_grant",
            http_status=exc.http_status,
            intuit_tid=exc.intuit_tid,
        )

    def _save_refreshed(self, realm_id: str, fresh: TokenSet) -> None:
        # The rotated refresh token is durable before anyone uses the new access token.
        secrets.put_json(token_secret_id(realm_id), fresh.to_secret())
        self._connections.record_refresh(realm_id, fresh)
        self._cache[realm_id] = fresh
        self.refreshes += 1
        logger().info("qbo tokens refreshed", extra={"realm_id": realm_id, "token_version": fresh.token_version})

    def _oauth_client(self) -> Refresher:
        if self._oauth is None:
            from shared.adapters.qbo.oauth import intuit_oauth

            self._oauth = intuit_oauth()
        return self._oauth

    def _realm_lock(self, realm_id: str) -> threading.Lock:
        with self._guard:
            lock = self._realm_locks.get(realm_id)
            if lock is None:
                lock = self._realm_locks[realm_id] = threading.Lock()
            return lock
