"""Mappings: view, set (validated against the QBO company's current lists), report codes seen in events that
have no mapping, re-drive what failed for lack of a mapping, and — only when asked — re-post documents
already synced with the old mapping.

Changing a mapping never rewrites what is already posted unless ``repost`` is given: synced objects stay as
they are; their next change uses the new mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.adapters.attention import AttentionStore
from shared.adapters.audit import AuditLog
from shared.adapters.dynamo import ObjectItem
from shared.adapters.qbo.types import QboApi
from shared.adapters.refs import RefCache
from shared.domain.errors import BadRequest, Conflict, NotFound
from shared.domain.failures import mapping_key
from shared.domain.plain import to_json
from shared.domain.tenant import Tenant
from shared.observability import count
from shared.services.qbo_factory import connected_client
from shared.services.tenants import get_tenant, update_tenant

ClientFactory = Callable[[str], QboApi]
# Section → the QBO list its values name.
ENTITY = {
    "services": "Item",
    "providers": "Class",
    "locations": "Department",
    "tax_codes": "TaxCode",
    "payment_methods": "PaymentMethod",
    "deposit_account": "Account",
}
# The sync engine caches a tenant record for up to 30 s per container; a retry made sooner could still see
# the old mappings, so retries after a mapping change are scheduled just after that (the retry sweep wakes them).
ENGINE_TENANT_CACHE_S = 35
INVOICE_KINDS = ("appointment", "invoice")
MONEY_KINDS = ("payment", "remittance", "credit")


def _default_factory(realm_id: str) -> QboApi:
    from shared.services.qbo_factory import default_client_factory

    return default_client_factory(realm_id)


class MappingService:
    def __init__(
        self,
        client_factory: ClientFactory | None = None,
        refs: RefCache | None = None,
        store: AttentionStore | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.client_factory = client_factory or _default_factory
        self.refs = refs or RefCache(min_refresh_s=0)
        self.store = store or AttentionStore()
        self.audit = audit or AuditLog()

    def _client(self, tenant: Tenant) -> QboApi:
        return connected_client(tenant, self.client_factory)

    # ------------------------------------------------------------------ reads
    def show(self, tenant_id: str) -> dict[str, Any]:
        tenant = get_tenant(tenant_id)
        return {"tenant_id": tenant_id, "realm_id": tenant.realm_id, "mappings": to_json(tenant.mappings)}

    def refresh(self, tenant_id: str) -> dict[str, Any]:
        """Reload the QBO lists (one /batch) for every worker."""
        tenant = get_tenant(tenant_id)
        snap = self.refs.refresh(self._client(tenant))
        return {"realm_id": tenant.realm_id, "lists": {e: len(rows) for e, rows in snap.by_id.items()}}

    def validate(self, tenant_id: str, *, refresh: bool = True) -> dict[str, Any]:
        """Every mapping value checked against the company's current (active) list entries."""
        tenant = get_tenant(tenant_id)
        client = self._client(tenant)
        if refresh:
            self.refs.refresh(client)
        problems = []
        checked = 0
        for key, entity, ref in _values(to_json(tenant.mappings)):
            checked += 1
            row = self.refs.lookup(client, entity, ref)
            if row is None:
                problems.append(
                    {"mapping": key, "value": ref, "entity": entity, "problem": f"no active {entity} named '{ref}'"}
                )
        return {"tenant_id": tenant_id, "checked": checked, "ok": not problems, "problems": problems}

    def unmapped(self, tenant_id: str) -> dict[str, Any]:
        """Codes and ids seen in the tenant's objects that have no mapping, with how many objects use them."""
        tenant = get_tenant(tenant_id)
        m = tenant.mappings
        seen: dict[str, dict[str, int]] = {"services": {}, "providers": {}, "locations": {}, "payment_methods": {}}
        for item in self.store.of_tenant(tenant_id, INVOICE_KINDS + MONEY_KINDS):
            for section, value in _uses(item):
                seen[section][value] = seen[section].get(value, 0) + 1
        report: dict[str, dict[str, int]] = {}
        for section, values in seen.items():
            mapped: dict[str, Any] = getattr(m, section)
            if section == "providers" and not mapped:
                continue  # class tracking is optional: no provider mappings means classes are not used
            if section == "locations" and not mapped:
                continue
            if section == "payment_methods" and not mapped:
                continue
            missing = {v: n for v, n in sorted(values.items()) if not _is_mapped(section, v, mapped)}
            if missing:
                report[section] = missing
        return {"tenant_id": tenant_id, "unmapped": report}

    # ------------------------------------------------------------------ changes
    def set(
        self,
        actor: str,
        tenant_id: str,
        changes: dict[str, Any],
        *,
        validate: bool = True,
        repost: bool = False,
        retry: bool = True,
    ) -> dict[str, Any]:
        """Apply ``{"services.97110": "Therapeutic Exercise", "deposit_account": "Checking"}``.

        Raises BadRequest (unknown section, invalid value, or a QBO name that does not exist when
        ``validate``), NotFound, Conflict.
        """
        tenant = get_tenant(tenant_id)
        updates: dict[str, Any] = {}
        keys: list[str] = []
        for raw_key, value in changes.items():
            key = raw_key.removeprefix("mappings.")
            section, _, code = key.partition(".")
            if section not in ENTITY and section != "payer_types":
                raise BadRequest(f"'{section}' is not a mapping section ({', '.join(ENTITY)}, payer_types)", field=key)
            if code:
                updates.setdefault(f"mappings.{section}", {})[code] = value
            else:
                updates[f"mappings.{section}"] = value
            keys.append(key)
        if validate:
            self._check_exists(tenant, changes)
        updated = update_tenant(tenant_id, changes=updates)
        retried = self._retry_failed(actor, tenant_id, keys) if retry else []
        reposted = self._repost(actor, tenant_id, keys) if repost else []
        self.audit.record(
            tenant_id, actor, "mappings_set", ",".join(keys), {"changes": changes, "repost": repost, "retried": retried}
        )
        count("OpsMappingsSet")
        return {
            "tenant_id": tenant_id,
            "mappings": to_json(updated.mappings),
            "retried": retried,
            "retry_after_s": ENGINE_TENANT_CACHE_S if retried else 0,
            "reposted": reposted,
        }

    def _check_exists(self, tenant: Tenant, changes: dict[str, Any]) -> None:
        client = self._client(tenant)
        self.refs.refresh(client)
        bad = []
        for raw_key, value in changes.items():
            key = raw_key.removeprefix("mappings.")
            section = key.split(".", 1)[0]
            entity = ENTITY.get(section)
            if entity is None or not isinstance(value, str):
                continue
            if self.refs.lookup(client, entity, value) is None:
                bad.append(f"{key}: no active QuickBooks {entity} named '{value}'")
        if bad:
            raise BadRequest("; ".join(bad), field="changes", problems=bad)

    def _retry_failed(self, actor: str, tenant_id: str, keys: Iterable[str]) -> list[str]:
        """Failed objects whose error names one of the changed mappings go back to the normal path, scheduled
        just after the engine's tenant cache so they see the new mapping."""
        wanted = {_base_key(k) for k in keys}
        due = (datetime.now(UTC) + timedelta(seconds=ENGINE_TENANT_CACHE_S)).isoformat()
        out: list[str] = []
        for item in list(self.store.by_status("failed", tenant_id)):
            needed = mapping_key(item.last_error)
            if not needed or _base_key(needed) not in wanted:
                continue
            try:
                self.store.schedule_retry(item, reason=f"mapping {needed} set by {actor}", due=due)
            except (Conflict, NotFound):
                continue
            self.audit.record(tenant_id, actor, "retry", item.object_key, {"after_mapping": needed, "due": due})
            out.append(item.object_key)
        return out

    def _repost(self, actor: str, tenant_id: str, keys: Iterable[str]) -> list[str]:
        """Synced objects that use a changed mapping are reconciled again (their documents get updated)."""
        wanted = {_base_key(k) for k in keys}
        out: list[str] = []
        for item in self.store.of_tenant(tenant_id, INVOICE_KINDS + MONEY_KINDS):
            if item.status != "synced":
                continue
            if not any(f"{section}.{value}" in wanted for section, value in _uses(item)):
                continue
            if self.store.touch(item, reason=f"repost after mapping change by {actor}"):
                out.append(item.object_key)
        if out:
            self.audit.record(tenant_id, actor, "repost", ",".join(sorted(wanted)), {"objects": out})
        return out


def _base_key(key: str) -> str:
    """``services.97110|insurance|*`` → ``services.97110`` (a failure names the bare code)."""
    section, _, code = key.partition(".")
    return f"{section}.{code.split('|', 1)[0]}" if code else section


def _values(m: dict[str, Any]) -> Iterable[tuple[str, str, str]]:
    for section, entity in ENTITY.items():
        value = m.get(section)
        if isinstance(value, dict):
            for code, ref in value.items():
                yield f"{section}.{code}", entity, str(ref)
        elif isinstance(value, str):
            yield section, entity, value
    for payer, spec in (m.get("payer_types") or {}).items():
        if isinstance(spec, dict) and spec.get("income_account"):
            yield f"payer_types.{payer}.income_account", "Account", str(spec["income_account"])


def _uses(item: ObjectItem) -> Iterable[tuple[str, str]]:
    """(section, code) pairs an object's desired state needs mapped."""
    d = item.desired or {}
    for line in d.get("lines") or []:
        if isinstance(line, dict) and line.get("service_code"):
            yield "services", str(line["service_code"])
    if d.get("provider_id"):
        yield "providers", str(d["provider_id"])
    if d.get("location_id"):
        yield "locations", str(d["location_id"])
    if d.get("method"):
        yield "payment_methods", str(d["method"])


def _is_mapped(section: str, value: str, mapped: dict[str, Any]) -> bool:
    if section != "services":
        return value in mapped
    return value in mapped or any(k.split("|", 1)[0] == value for k in mapped)
