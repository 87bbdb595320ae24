"""Change notices in the ledger (``notice`` items) and the realm → tenants lookup the webhook path needs.

Notice item: pk ``NOTICE#{realm}#{dedupe_key}``, sk ``NOTICE``. Stored once per key (a conditional put, or a
webhook's notices together: ``put_many``), so a duplicate delivery (Intuit retries, CDC re-finding a webhook's
change under the same key) is stored once; the stream delivers each INSERT to ``qbo_change_worker`` exactly as
often as a new notice appears.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from pynamodb.exceptions import PutError, UpdateError

from shared.adapters import secrets
from shared.adapters.dynamo import AuditItem, LockItem, NoticeItem, RefItem, TenantItem, bind_table, read_keys, whole
from shared.adapters.tenants import tenant_from_item
from shared.domain.qbo_notices import Notice
from shared.domain.tenant import Tenant

# Intuit retries for days (every 6 h after the first hours); keep dedupe keys well past that.
NOTICE_TTL_S = 45 * 86400


def notice_pk(realm_id: str, dedupe_key: str) -> str:
    return f"NOTICE#{realm_id}#{dedupe_key}"


class NoticeStore:
    def __init__(self) -> None:
        bind_table()

    def put(self, notice: Notice, *, now: float | None = None) -> bool:
        """Store a notice once. Returns False when the same dedupe key is already stored."""
        item = _notice_item(notice, time.time() if now is None else now)
        try:
            item.save(condition=NoticeItem.pk.does_not_exist())
        except PutError as exc:
            if exc.cause_response_code == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def put_many(self, notices: list[Notice]) -> list[bool]:
        """Store a delivery's notices (up to 100 in one Intuit POST) in a few calls: one batch read finds the
        keys already stored, one batch write per 25 stores the rest. Returns, per notice, whether it was new
        (a key repeated within ``notices`` is new once).

        Without a condition per item, two deliveries of one notice racing between the read and the write may
        both write it. That is harmless: only the first write is an INSERT, and the change worker's stream
        filter takes INSERTs only, so the notice is handled once either way."""
        ts = time.time()
        keys = [(notice_pk(n.realm_id, n.dedupe_key), "NOTICE") for n in notices]
        known = {(i.pk, i.sk) for i in read_keys(NoticeItem, keys)}
        new: list[bool] = []
        with NoticeItem.batch_write() as batch:
            for notice, key in zip(notices, keys, strict=True):
                new.append(key not in known)
                if key not in known:
                    known.add(key)
                    batch.save(_notice_item(notice, ts))
        return new

    def get(self, realm_id: str, dedupe_key: str) -> NoticeItem | None:
        try:
            return NoticeItem.get(notice_pk(realm_id, dedupe_key), "NOTICE", consistent_read=True)
        except NoticeItem.DoesNotExist:
            return None


def notice_from_item(item: NoticeItem) -> Notice:
    return Notice(
        realm_id=item.realm_id,
        entity=item.entity,
        entity_id=item.entity_id,
        operation=item.operation,
        occurred_at=item.occurred_at,
        source=item.source,
        dedupe_key=item.dedupe_key,
        data=dict(item.data or {}),
    )


class RealmTenants:
    """Tenants linked to a realm (tenant gsi1 ``REALM#{realm}``), cached per container for ``ttl_s``."""

    def __init__(self, ttl_s: float = 60.0) -> None:
        bind_table()
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[float, list[Tenant]]] = {}

    def get(self, realm_id: str) -> list[Tenant]:
        now = time.monotonic()
        hit = self._cache.get(realm_id)
        if hit and now - hit[0] < self._ttl_s:
            return hit[1]
        tenants = [
            tenant_from_item(i)
            for i in whole(TenantItem.gsi1.query(f"REALM#{realm_id}", TenantItem.gsi1sk.startswith("TENANT#")))
            if isinstance(i, TenantItem)
        ]
        active = [t for t in tenants if t.status == "active"]
        if active:  # an unknown realm is not cached: linking a tenant takes effect at once
            self._cache[realm_id] = (now, active)
        return active

    def all_realms(self) -> dict[str, list[Tenant]]:
        """Every realm with at least one active tenant (a filtered scan: few tenant items)."""
        out: dict[str, list[Tenant]] = {}
        for item in TenantItem.scan(TenantItem.rtype == "tenant"):
            tenant = tenant_from_item(item)
            if tenant.realm_id and tenant.status == "active":
                out.setdefault(tenant.realm_id, []).append(tenant)
        return out


class OpsRecords:
    """What ops sees from the QBO → platform direction: audit items (conflicts, mapping warnings), the CDC
    cursor per realm and the latest drift report per realm.

    * audit:  pk ``AUDIT#{tenant}``  sk ``{iso time}#{id}``  (AuditItem, actor ``qbo``)
    * cursor: pk ``REALM#{realm}``   sk ``CURSOR#cdc``  (LockItem; ``lock_until`` = cursor, epoch seconds)
    * drift:  pk ``REALM#{realm}``   sk ``REPORT#drift`` (RefItem; ``data`` = the report)
    """

    def __init__(self) -> None:
        bind_table()

    def audit(self, tenant_id: str, action: str, target: str, detail: dict[str, Any], *, key: str) -> None:
        """One audit record per (tenant, key): a repeated notice does not add a second one."""
        at = datetime.now(UTC).isoformat(timespec="milliseconds")
        item = AuditItem(
            f"AUDIT#{tenant_id}",
            f"QBO#{key}",
            rtype="audit",
            tenant_id=tenant_id,
            actor="qbo",
            action=action,
            target=target,
            detail=detail,
            at=at,
            gsi1pk=f"AUDIT#{action}",
            gsi1sk=f"{tenant_id}#{at}",
        )
        try:
            item.save(condition=AuditItem.pk.does_not_exist())
        except PutError as exc:
            if exc.cause_response_code != "ConditionalCheckFailedException":
                raise

    def audits(self, tenant_id: str) -> list[AuditItem]:
        return list(AuditItem.query(f"AUDIT#{tenant_id}"))

    def cursor(self, realm_id: str) -> float | None:
        try:
            item = LockItem.get(f"REALM#{realm_id}", "CURSOR#cdc", consistent_read=True)
        except LockItem.DoesNotExist:
            return None
        return float(item.lock_until) if item.lock_until else None

    def advance_cursor(self, realm_id: str, to: float) -> bool:
        """Move the cursor forward only (a slower concurrent sweep never moves it back)."""
        item = LockItem(f"REALM#{realm_id}", "CURSOR#cdc")
        try:
            item.update(
                actions=[LockItem.rtype.set("cursor"), LockItem.lock_until.set(int(to)), LockItem.owner.set("cdc")],
                condition=LockItem.lock_until.does_not_exist() | (LockItem.lock_until < int(to)),
            )
        except UpdateError as exc:
            if exc.cause_response_code == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def save_drift(self, realm_id: str, report: dict[str, Any]) -> None:
        RefItem(
            f"REALM#{realm_id}",
            "REPORT#drift",
            rtype="drift_report",
            entity="DriftReport",
            key="latest",
            qbo_id="-",
            data=report,
            fetched_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        ).save()

    def drift(self, realm_id: str) -> dict[str, Any] | None:
        try:
            return dict(RefItem.get(f"REALM#{realm_id}", "REPORT#drift", consistent_read=True).data or {})
        except RefItem.DoesNotExist:
            return None


class VerifierSecret:
    """The Intuit webhook verifier token(s) from Secrets Manager: ``{"verifier_token", "previous_verifier_token"?}``."""

    def __init__(self, secret_id: str, *, ttl_s: float = 60.0) -> None:
        self._secret_id = secret_id
        self._ttl_s = ttl_s

    def tokens(self, *, fresh: bool = False) -> list[str]:
        if not self._secret_id:
            return []
        try:
            value = secrets.get_json(self._secret_id, max_age_s=1.0 if fresh else self._ttl_s)
        except KeyError:
            return []
        found = (value.get("verifier_token"), value.get("previous_verifier_token"))
        return [t for t in found if isinstance(t, str) and t]


def _notice_item(notice: Notice, ts: float) -> NoticeItem:
    return NoticeItem(
        notice_pk(notice.realm_id, notice.dedupe_key),
        "NOTICE",
        rtype="notice",
        realm_id=notice.realm_id,
        dedupe_key=notice.dedupe_key,
        entity=notice.entity,
        entity_id=notice.entity_id,
        operation=notice.operation,
        occurred_at=notice.occurred_at,
        source=notice.source,
        data=notice.data,
        received_at=datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds"),
        expires_at=int(ts) + NOTICE_TTL_S,
    )
