"""TokenManager with a fake Intuit (moto for Secrets Manager and the ledger table; no network)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from shared.adapters.qbo.faults import QboReconnect
from shared.domain.oauth import TokenSet

REALM = "123146"


class FakeIntuit:
    """Rotates the refresh token on every refresh; an old one gets invalid_grant (no grace period)."""

    def __init__(self, live: str) -> None:
        self.live = live
        self.calls = 0
        self.revoked = False
        self._lock = threading.Lock()

    def refresh(self, refresh_token: str, *, version: int) -> TokenSet:
        with self._lock:
            self.calls += 1
            time.sleep(0.05)
            if self.revoked or refresh_token != self.live:
                raise QboReconnect("refused: invalid_grant", code="invalid_grant")
            self.live = f"rt-{version}"
            return TokenSet(f"at-{version}", self.live, time.time() + 3600, time.time() + 8_000_000, None, version)


@pytest.fixture
def stored(moto_aws: dict[str, str]) -> Iterator[TokenSet]:
    from shared.adapters import secrets
    from shared.adapters.connections import ConnectionRepository
    from shared.adapters.qbo.tokens import TokenManager, token_secret_id

    secrets.reset_client()
    tokens = TokenSet("at-1", "rt-1", time.time() + 3600, time.time() + 8_000_000, time.time() + 9e7, 1)
    TokenManager(oauth=FakeIntuit("rt-1")).store(REALM, tokens)
    ConnectionRepository().upsert_connected(REALM, secret_id=token_secret_id(REALM), tokens=tokens, company={})
    yield tokens
    secrets.reset_client()


def manager(intuit: FakeIntuit) -> object:
    from shared.adapters.qbo.tokens import TokenManager

    return TokenManager(oauth=intuit, poll_s=0.02)


def expire(realm: str) -> None:
    from shared.adapters import secrets
    from shared.adapters.qbo.tokens import token_secret_id

    value = secrets.get_json(token_secret_id(realm), max_age_s=0)
    secrets.put_json(token_secret_id(realm), {**value, "access_expires_at": time.time() + 60})  # inside 5 min


def test_valid_token_is_served_from_cache_without_refresh(stored: TokenSet) -> None:
    intuit = FakeIntuit("rt-1")
    tm = manager(intuit)
    assert tm.access_token(REALM) == "at-1"  # type: ignore[attr-defined]
    assert intuit.calls == 0


def test_token_near_expiry_is_refreshed_and_rotation_saved_first(stored: TokenSet) -> None:
    from shared.adapters import secrets
    from shared.adapters.connections import ConnectionRepository
    from shared.adapters.qbo.tokens import token_secret_id

    expire(REALM)
    intuit = FakeIntuit("rt-1")
    assert manager(intuit).access_token(REALM) == "at-2"  # type: ignore[attr-defined]
    saved = secrets.get_json(token_secret_id(REALM), max_age_s=0)
    assert (saved["refresh_token"], saved["token_version"]) == ("rt-2", 2)
    assert ConnectionRepository().token_version(REALM) == 2


def test_concurrent_managers_refresh_once(stored: TokenSet) -> None:
    expire(REALM)
    intuit = FakeIntuit("rt-1")
    managers = [manager(intuit) for _ in range(10)]  # ten containers
    got: list[str] = []
    barrier = threading.Barrier(10)

    def run(tm: object) -> None:
        barrier.wait()
        got.append(tm.access_token(REALM))  # type: ignore[attr-defined]

    threads = [threading.Thread(target=run, args=(m,)) for m in managers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert intuit.calls == 1
    assert got == ["at-2"] * 10


def test_invalid_grant_marks_needs_reconnect(stored: TokenSet) -> None:
    from shared.adapters.connections import ConnectionRepository

    expire(REALM)
    intuit = FakeIntuit("rt-1")
    intuit.revoked = True
    with pytest.raises(QboReconnect) as err:
        manager(intuit).access_token(REALM)  # type: ignore[attr-defined]
    assert "rt-1" not in str(err.value) and "at-1" not in str(err.value)
    assert ConnectionRepository().status(REALM) == "needs_reconnect"


def test_invalid_grant_after_a_concurrent_rotation_uses_the_new_token(stored: TokenSet) -> None:
    """A worker with a stale view (at-1) after another rotated the tokens re-reads instead of refreshing."""
    from shared.adapters.connections import ConnectionRepository
    from shared.adapters.qbo.tokens import TokenManager

    intuit = FakeIntuit("rt-1")
    other = TokenManager(oauth=intuit)
    slow = TokenManager(oauth=intuit)
    assert other.refresh_after_401(REALM, "at-1") == "at-2"  # rotates rt-1 → rt-2
    # `slow` still believes at-1 is current; QBO rejected it: it must not burn the connection.
    assert slow.refresh_after_401(REALM, "at-1") == "at-2"
    assert ConnectionRepository().status(REALM) == "connected"
    assert intuit.calls == 1


def test_no_tokens_means_reconnect(moto_aws: dict[str, str]) -> None:
    from shared.adapters import secrets

    secrets.reset_client()
    with pytest.raises(QboReconnect):
        manager(FakeIntuit("x")).access_token("999")  # type: ignore[attr-defined]
