"""TenantRepository (the ``tenant`` items of the ledger table) and the ingest's view of signing secrets.

Tenant item: pk ``TENANT#{tenant}``, sk ``TENANT``; gsi1 ``REALM#{realm}`` / ``TENANT#{tenant}`` once a QBO
company is linked. Writes are conditional (create: not exists; update: optimistic on ``updated_at``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pynamodb.exceptions import DeleteError, PutError, UpdateError
from pynamodb.expressions.condition import Condition

from shared.adapters import secrets
from shared.adapters.dynamo import TenantItem, bind_table
from shared.domain.errors import Conflict, NotFound
from shared.domain.plain import from_stored, to_json
from shared.domain.tenant import Tenant, TenantMappings, TenantSettings


def tenant_pk(tenant_id: str) -> str:
    return f"TENANT#{tenant_id}"


class TenantRepository:
    def __init__(self) -> None:
        bind_table()

    def get(self, tenant_id: str, *, consistent: bool = False) -> Tenant | None:
        try:
            item = TenantItem.get(tenant_pk(tenant_id), "TENANT", consistent_read=consistent)
        except TenantItem.DoesNotExist:
            return None
        return tenant_from_item(item)

    def list(self) -> list[Tenant]:
        """Every tenant (a filtered scan: an admin operation over a table with few tenant items)."""
        return sorted(
            (tenant_from_item(i) for i in TenantItem.scan(TenantItem.rtype == "tenant")), key=lambda t: t.tenant_id
        )

    def create(self, tenant: Tenant) -> None:
        """Raises Conflict (field ``tenant_id``) if the tenant already exists."""
        item = _to_item(tenant)
        try:
            item.save(condition=TenantItem.pk.does_not_exist())
        except PutError as exc:
            if exc.cause_response_code == "ConditionalCheckFailedException":
                raise Conflict(f"tenant '{tenant.tenant_id}' already exists", field="tenant_id") from exc
            raise

    def delete(self, tenant_id: str) -> None:
        try:
            TenantItem(tenant_pk(tenant_id), "TENANT").delete(condition=TenantItem.pk.exists())
        except DeleteError as exc:
            if exc.cause_response_code != "ConditionalCheckFailedException":
                raise

    def replace(self, tenant: Tenant, *, expected_updated_at: datetime | None) -> None:
        """Store ``tenant``'s mutable fields if nobody changed the record since it was read.

        Raises NotFound if the tenant is gone, Conflict if it changed concurrently (read it again).
        """
        item = TenantItem(tenant_pk(tenant.tenant_id), "TENANT")
        same_version: Condition = (
            TenantItem.updated_at.does_not_exist()
            if expected_updated_at is None
            else TenantItem.updated_at == expected_updated_at.isoformat()
        )
        actions: list[Any] = [
            TenantItem.name.set(tenant.name),
            TenantItem.status.set(tenant.status),
            TenantItem.settings.set(to_json(tenant.settings)),
            TenantItem.mappings.set(to_json(tenant.mappings)),
        ]
        if tenant.updated_at is not None:
            actions.append(TenantItem.updated_at.set(tenant.updated_at.isoformat()))
        actions.append(
            TenantItem.callback_url.set(tenant.callback_url)
            if tenant.callback_url
            else TenantItem.callback_url.remove()
        )
        try:
            item.update(actions=actions, condition=TenantItem.pk.exists() & same_version)
        except UpdateError as exc:
            if exc.cause_response_code != "ConditionalCheckFailedException":
                raise
            if self.get(tenant.tenant_id, consistent=True) is None:
                raise NotFound(f"unknown tenant '{tenant.tenant_id}'", field="tenant_id") from exc
            raise Conflict(
                f"tenant '{tenant.tenant_id}' changed while it was being updated", field="tenant_id"
            ) from exc


_FORCED_REREAD_S = 1.0


class SigningKeyring:
    """The ingest's ``SigningKeys``: tenant record (cached per container) → its signing secret JSON."""

    def __init__(self, repo: TenantRepository, *, tenant_ttl_s: float = 60.0, secret_ttl_s: float = 60.0) -> None:
        self._repo = repo
        self._tenant_ttl_s = tenant_ttl_s
        self._secret_ttl_s = secret_ttl_s
        self._tenants: dict[str, tuple[float, Tenant]] = {}
        self._forced_at: dict[str, float] = {}

    def secrets_for(self, tenant_id: str, *, fresh: bool = False) -> Sequence[str] | None:
        tenant = self._tenant(tenant_id, fresh=fresh)
        if tenant is None or tenant.status != "active":
            return None
        max_age_s = self._secret_ttl_s
        if fresh:
            # At most one forced re-read per tenant per second, so bad signatures cannot make every request a
            # Secrets Manager call. Counted from the last forced re-read, not from when the value was cached:
            # a value cached a moment before a rotation must not refuse the new secret for that second.
            now = time.monotonic()
            if now - self._forced_at.get(tenant_id, -_FORCED_REREAD_S) >= _FORCED_REREAD_S:
                self._forced_at[tenant_id] = now
                max_age_s = 0.0
        try:
            value = secrets.get_json(tenant.signing_secret_id, max_age_s=max_age_s)
        except KeyError:
            return []
        return [s for s in (value.get("current"), value.get("previous")) if isinstance(s, str) and s]

    def _tenant(self, tenant_id: str, *, fresh: bool) -> Tenant | None:
        now = time.monotonic()
        hit = self._tenants.get(tenant_id)
        if hit and not fresh and now - hit[0] < self._tenant_ttl_s:
            return hit[1]
        tenant = self._repo.get(tenant_id)
        if tenant is None:
            self._tenants.pop(tenant_id, None)  # unknown tenants are not cached: creating one works at once
            return None
        self._tenants[tenant_id] = (now, tenant)
        return tenant


def _to_item(t: Tenant) -> TenantItem:
    return TenantItem(
        tenant_pk(t.tenant_id),
        "TENANT",
        rtype="tenant",
        gsi1pk=f"REALM#{t.realm_id}" if t.realm_id else None,
        gsi1sk=f"TENANT#{t.tenant_id}" if t.realm_id else None,
        tenant_id=t.tenant_id,
        name=t.name,
        realm_id=t.realm_id,
        status=t.status,
        signing_secret_id=t.signing_secret_id,
        callback_url=t.callback_url,
        settings=to_json(t.settings),
        mappings=to_json(t.mappings),
        created_at=t.created_at.isoformat(),
        updated_at=t.updated_at.isoformat() if t.updated_at else None,
    )


def tenant_from_item(item: TenantItem) -> Tenant:
    return Tenant(
        tenant_id=item.tenant_id,
        name=item.name,
        status="disabled" if item.status == "disabled" else "active",
        realm_id=item.realm_id,
        signing_secret_id=item.signing_secret_id,
        callback_url=item.callback_url,
        settings=from_stored(TenantSettings, item.settings or {}),
        mappings=from_stored(TenantMappings, item.mappings or {}),
        created_at=datetime.fromisoformat(item.created_at),
        updated_at=datetime.fromisoformat(item.updated_at) if item.updated_at else None,
    )
