"""Tenant administration: create, rotate the signing secret, change settings / mappings.

Used by the ``qbsync tenants`` CLI now and by the ops API later. Signing secrets live in Secrets Manager
as ``{SECRETS_PREFIX}/tenants/{tenant_id}/signing`` = ``{"current": "...", "previous": "..." | null}``;
both are accepted by ingest, so a rotation rejects nothing while the platform switches over.
"""

from __future__ import annotations

import json
import secrets as pysecrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from shared.adapters import secrets
from shared.adapters.tenants import TenantRepository
from shared.domain.errors import BadRequest, NotFound
from shared.domain.plain import to_json, validated
from shared.domain.problems import bad_request
from shared.domain.tenant import Tenant, TenantMappings, TenantSettings

Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


def signing_secret_name(tenant_id: str) -> str:
    return secrets.secret_name("tenants", tenant_id, "signing")


def new_signing_secret() -> str:
    return pysecrets.token_urlsafe(32)


@dataclass(frozen=True)
class TenantWithSecret:
    """A tenant and the signing secret just created for it (shown once, never stored elsewhere)."""

    tenant: Tenant
    signing_secret: str


def create_tenant(
    tenant_id: str,
    name: str,
    *,
    callback_url: str | None = None,
    settings: Mapping[str, Any] | None = None,
    repo: TenantRepository | None = None,
    clock: Clock = _now,
) -> TenantWithSecret:
    """Create the tenant record, then its signing secret.

    Raises BadRequest (invalid id / name / settings) or Conflict (the tenant exists; nothing is changed).
    """
    repo = repo or TenantRepository()
    try:
        tenant = validated(
            Tenant,
            {
                "tenant_id": tenant_id,
                "name": name,
                "callback_url": callback_url,
                "signing_secret_id": signing_secret_name(tenant_id),
                "settings": validated(TenantSettings, dict(settings or {})),
                "created_at": clock(),
            },
        )
    except ValidationError as exc:
        raise bad_request(exc) from exc
    # Record first, secret second: the conditional create is what guarantees we never overwrite the
    # secret of an existing tenant. A secret left by an earlier failed create is an orphan; replacing it is safe.
    repo.create(tenant)
    secret = new_signing_secret()
    try:
        secrets.put_json(
            tenant.signing_secret_id,
            {"current": secret, "previous": None},
            description=f"qbsync signing secret of tenant {tenant_id}",
        )
    except Exception:
        repo.delete(tenant_id)  # no tenant without a secret
        raise
    return TenantWithSecret(tenant=tenant, signing_secret=secret)


def get_tenant(tenant_id: str, *, repo: TenantRepository | None = None) -> Tenant:
    """Raises NotFound."""
    tenant = (repo or TenantRepository()).get(tenant_id, consistent=True)
    if tenant is None:
        raise NotFound(f"unknown tenant '{tenant_id}'", field="tenant_id")
    return tenant


def list_tenants(*, repo: TenantRepository | None = None) -> list[Tenant]:
    return (repo or TenantRepository()).list()


def rotate_signing_secret(tenant_id: str, *, repo: TenantRepository | None = None) -> TenantWithSecret:
    """Move current → previous and set a new current. Both stay valid until the next rotation.

    Raises NotFound for an unknown tenant.
    """
    tenant = get_tenant(tenant_id, repo=repo)
    try:
        current = secrets.get_json(tenant.signing_secret_id, max_age_s=0).get("current")
    except KeyError:
        current = None
    secret = new_signing_secret()
    secrets.put_json(tenant.signing_secret_id, {"current": secret, "previous": current})
    return TenantWithSecret(tenant=tenant, signing_secret=secret)


def update_tenant(
    tenant_id: str,
    *,
    changes: Mapping[str, Any] | None = None,
    name: str | None = None,
    callback_url: str | None = None,
    clear_callback_url: bool = False,
    repo: TenantRepository | None = None,
    clock: Clock = _now,
) -> Tenant:
    """Apply ``changes`` (dotted keys → values) to the tenant's settings, or to its mappings for keys
    starting with ``mappings.`` (a dict value is merged into that section).

    Raises NotFound, BadRequest (unknown key / invalid value, naming it) or Conflict (changed concurrently).
    """
    repo = repo or TenantRepository()
    tenant = get_tenant(tenant_id, repo=repo)
    settings = to_json(tenant.settings)
    mappings = to_json(tenant.mappings)
    for key, value in (changes or {}).items():
        path = key.split(".")
        if path[0] == "mappings":
            if len(path) < 2:
                raise BadRequest("name a mappings section, e.g. mappings.services", field=key)
            _merge(mappings, path[1:], value, whole_key=key)
        else:
            _merge(settings, path, value, whole_key=key)
    try:
        updated = validated(
            Tenant,
            {
                **to_json(tenant),
                "name": name if name is not None else tenant.name,
                "callback_url": None if clear_callback_url else (callback_url or tenant.callback_url),
                "settings": validated(TenantSettings, settings),
                "mappings": validated(TenantMappings, mappings),
                "updated_at": clock(),
            },
        )
    except ValidationError as exc:
        raise bad_request(exc) from exc
    repo.replace(updated, expected_updated_at=tenant.updated_at)
    return updated


def parse_value(raw: str) -> Any:
    """A CLI value: JSON when it parses as JSON (true, 0.9, null, {"a": 1}, "quoted"), else the plain string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _merge(doc: dict[str, Any], path: list[str], value: Any, *, whole_key: str) -> None:
    node = doc
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            raise BadRequest(f"'{whole_key}' is not a setting", field=whole_key)
        node = child
    leaf = path[-1]
    if isinstance(value, dict) and isinstance(node.get(leaf), dict):
        node[leaf] = {**node[leaf], **value}
    else:
        node[leaf] = value
