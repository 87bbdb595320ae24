"""ConnectionRepository (``connection`` items: pk ``REALM#{realm}``, sk ``CONN``), per-realm leased locks
and the OAuth state items. Every state change is a conditional write."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from pynamodb.exceptions import DeleteError, PutError, UpdateError

from shared.adapters.dynamo import ConnectionItem, LockItem, OAuthStateItem, TenantItem, bind_table, whole
from shared.domain.errors import NotFound
from shared.domain.oauth import STATE_TTL, Connection, OAuthStateInvalid, TokenSet, check_state_age

_CCF = "ConditionalCheckFailedException"


def _pk(realm_id: str) -> str:
    return f"REALM#{realm_id}"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _conditional_failed(exc: PutError | UpdateError | DeleteError) -> bool:
    return exc.cause_response_code == _CCF


class ConnectionRepository:
    def __init__(self) -> None:
        bind_table()

    def get(self, realm_id: str, *, consistent: bool = False) -> Connection | None:
        try:
            item = ConnectionItem.get(_pk(realm_id), "CONN", consistent_read=consistent)
        except ConnectionItem.DoesNotExist:
            return None
        return _to_domain(item)

    def status(self, realm_id: str) -> str | None:
        conn = self.get(realm_id, consistent=True)
        return conn.status if conn else None

    def is_connected(self, realm_id: str) -> bool:
        return self.status(realm_id) == "connected"

    def token_version(self, realm_id: str) -> int:
        conn = self.get(realm_id, consistent=True)
        return conn.token_version if conn else 0

    def upsert_connected(self, realm_id: str, *, secret_id: str, tokens: TokenSet, company: dict[str, Any]) -> None:
        """Record a (re)connect: status connected, company summary, token expiries. Keeps history fields
        (last sync, throttling). Never moves ``token_version`` backwards."""
        now = _now_iso()
        item = ConnectionItem(_pk(realm_id), "CONN")
        version = ConnectionItem.token_version
        item.update(
            actions=[
                ConnectionItem.rtype.set("connection"),
                ConnectionItem.realm_id.set(realm_id),
                ConnectionItem.status.set("connected"),
                ConnectionItem.secret_id.set(secret_id),
                ConnectionItem.company.set(company),
                version.set(tokens.token_version),
                *_expiry_actions(tokens),
                ConnectionItem.connected_at.set(now),
                ConnectionItem.updated_at.set(now),
            ],
            condition=version.does_not_exist() | (version < tokens.token_version),
        )

    def record_refresh(self, realm_id: str, tokens: TokenSet) -> bool:
        """Publish a refreshed token version (waiters poll it). False if a newer one is already there."""
        version = ConnectionItem.token_version
        try:
            ConnectionItem(_pk(realm_id), "CONN").update(
                actions=[
                    version.set(tokens.token_version),
                    *_expiry_actions(tokens),
                    ConnectionItem.updated_at.set(_now_iso()),
                ],
                condition=ConnectionItem.pk.exists() & (version < tokens.token_version),
            )
            return True
        except UpdateError as exc:
            if _conditional_failed(exc):
                return False
            raise

    def mark_needs_reconnect(self, realm_id: str) -> bool:
        """connected → needs_reconnect (a disconnected company stays disconnected). True if it changed."""
        return self._set_status(realm_id, "needs_reconnect", only_from="connected")

    def mark_disconnected(self, realm_id: str) -> bool:
        return self._set_status(realm_id, "disconnected")

    def mark_connected(self, realm_id: str) -> bool:
        return self._set_status(realm_id, "connected")

    def mark_throttled(self, realm_id: str) -> None:
        self._touch(realm_id, ConnectionItem.throttled_at)

    def mark_synced(self, realm_id: str) -> None:
        self._touch(realm_id, ConnectionItem.last_sync_at)

    def link_tenant(self, tenant_id: str, realm_id: str) -> None:
        """Point a tenant at a realm (``realm_id`` + gsi1 ``REALM#{realm}``); several tenants may share one.

        Raises NotFound if the tenant does not exist.
        """
        try:
            TenantItem(f"TENANT#{tenant_id}", "TENANT").update(
                actions=[
                    TenantItem.realm_id.set(realm_id),
                    TenantItem.gsi1pk.set(_pk(realm_id)),
                    TenantItem.gsi1sk.set(f"TENANT#{tenant_id}"),
                    TenantItem.updated_at.set(_now_iso()),
                ],
                condition=TenantItem.pk.exists(),
            )
        except UpdateError as exc:
            if _conditional_failed(exc):
                raise NotFound(f"unknown tenant '{tenant_id}'", field="tenant") from exc
            raise

    def tenants_of(self, realm_id: str) -> list[str]:
        rows = whole(TenantItem.gsi1.query(_pk(realm_id)))
        return sorted(str(i.attribute_values["tenant_id"]) for i in rows if i.rtype == "tenant")

    def all(self) -> list[Connection]:
        """Every connection (a filtered scan: few items of this type)."""
        rows = ConnectionItem.scan(ConnectionItem.rtype == "connection")
        return sorted((_to_domain(i) for i in rows), key=lambda c: c.realm_id)

    def health(self, now: datetime | None = None) -> list[dict[str, Any]]:
        at = now or datetime.now(UTC)
        return [c.health(at) for c in self.all()]

    def _set_status(self, realm_id: str, status: str, *, only_from: str | None = None) -> bool:
        cond = ConnectionItem.pk.exists()
        if only_from is not None:
            cond = cond & (ConnectionItem.status == only_from)
        try:
            ConnectionItem(_pk(realm_id), "CONN").update(
                actions=[ConnectionItem.status.set(status), ConnectionItem.updated_at.set(_now_iso())],
                condition=cond,
            )
            return True
        except UpdateError as exc:
            if _conditional_failed(exc):
                return False
            raise

    def _touch(self, realm_id: str, attr: Any) -> None:
        try:
            ConnectionItem(_pk(realm_id), "CONN").update(
                actions=[attr.set(_now_iso())], condition=ConnectionItem.pk.exists()
            )
        except UpdateError as exc:
            if not _conditional_failed(exc):
                raise


class RealmLocks:
    """Leased per-realm locks (LockItem ``LOCK#{name}``): a crashed holder's lock expires with its lease."""

    def __init__(self) -> None:
        bind_table()

    def try_acquire(self, realm_id: str, name: str, owner: str, lease_s: float) -> bool:
        now = time.time()
        item = LockItem(_pk(realm_id), f"LOCK#{name}", rtype="lock", owner=owner, lock_until=now + lease_s)
        try:
            item.save(condition=LockItem.pk.does_not_exist() | (LockItem.lock_until < now))
            return True
        except PutError as exc:
            if _conditional_failed(exc):
                return False
            raise

    def release(self, realm_id: str, name: str, owner: str) -> None:
        try:
            LockItem(_pk(realm_id), f"LOCK#{name}").delete(condition=LockItem.owner == owner)
        except DeleteError as exc:
            if not _conditional_failed(exc):
                raise


class OAuthStates:
    """Single-use OAuth ``state`` values bound to a tenant, living 10 minutes (TTL ``expires_at``)."""

    def __init__(self) -> None:
        bind_table()

    def create(self, state: str, tenant_id: str) -> None:
        now = datetime.now(UTC)
        OAuthStateItem(
            f"OAUTHSTATE#{state}",
            "STATE",
            rtype="oauthstate",
            tenant_id=tenant_id,
            created_at=now.isoformat(),
            used=False,
            expires_at=int((now + STATE_TTL).timestamp()),
        ).save(condition=OAuthStateItem.pk.does_not_exist())

    def consume(self, state: str) -> str:
        """Mark the state used and return its tenant.

        Raises OAuthStateInvalid: 'forged' (unknown), 'expired' (older than 10 min; TTL deletion is lazy),
        'replayed' (already used — the conditional write lets exactly one callback through).
        """
        try:
            item = OAuthStateItem.get(f"OAUTHSTATE#{state}", "STATE", consistent_read=True)
        except OAuthStateItem.DoesNotExist as exc:
            raise OAuthStateInvalid("forged") from exc
        if item.used:
            raise OAuthStateInvalid("replayed")
        check_state_age(datetime.fromisoformat(item.created_at), datetime.now(UTC))
        try:
            item.update(
                actions=[OAuthStateItem.used.set(True)],
                condition=OAuthStateItem.pk.exists() & (OAuthStateItem.used == False),  # noqa: E712
            )
        except UpdateError as exc:
            if _conditional_failed(exc):
                raise OAuthStateInvalid("replayed") from exc
            raise
        return item.tenant_id


def _expiry_actions(tokens: TokenSet) -> list[Any]:
    actions: list[Any] = [
        ConnectionItem.access_expires_at.set(tokens.access_expires_at),
        ConnectionItem.refresh_expires_at.set(tokens.refresh_expires_at),
    ]
    if tokens.refresh_hard_expires_at is not None:
        actions.append(ConnectionItem.refresh_hard_expires_at.set(tokens.refresh_hard_expires_at))
    return actions


def _to_domain(item: ConnectionItem) -> Connection:
    return Connection(
        realm_id=item.realm_id,
        status=item.status,
        company=dict(item.company or {}),
        token_version=int(item.token_version or 0),
        refresh_expires_at=item.refresh_expires_at,
        refresh_hard_expires_at=item.refresh_hard_expires_at,
        connected_at=item.connected_at,
        last_sync_at=item.last_sync_at,
        throttled_at=item.throttled_at,
        updated_at=item.updated_at,
    )
