"""The retry sweep: redrive transient failures after backoff; wake stale waits, held work, and objects whose
worker died mid-reconcile (lease expired without a finish); restart a realm's queue that stopped moving."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from shared.adapters.dynamo import ConnectionItem, TenantItem
from shared.adapters.objects import ObjectRepository
from shared.config import get_settings
from shared.observability import count

STALE_WAIT = timedelta(minutes=10)


def retry_sweep(now: datetime | None = None, objects: ObjectRepository | None = None) -> dict[str, Any]:
    """Touch every object that is due. Returns counts per reason."""
    repo = objects or ObjectRepository()
    now = now or datetime.now(UTC)
    woken = {"retrying": 0, "waiting": 0, "held": 0, "abandoned": 0, "queued": 0}
    for item in repo.expired_leases(int(now.timestamp())):
        woken["abandoned"] += repo.reclaim(item, reason="its worker stopped mid-reconcile; running it again")
    for item in repo.by_status("retrying"):
        if item.next_attempt_at and datetime.fromisoformat(item.next_attempt_at) <= now:
            woken["retrying"] += repo.touch(item, reason="retry after backoff")
    for item in repo.by_status("waiting"):
        if datetime.fromisoformat(item.updated_at) <= now - STALE_WAIT:
            woken["waiting"] += repo.touch(item, reason="re-check prerequisites")
    connected: dict[str, bool] = {}
    for item in repo.by_status("held"):
        realm = _realm_of(item.tenant_id)
        if realm is None:
            continue
        if realm not in connected:
            connected[realm] = _is_connected(realm)
        if connected[realm]:
            woken["held"] += repo.touch(item, reason="connection restored")
    woken["queued"] = _restart_stalled_queues(now)
    for reason, n in woken.items():
        if n:
            count("SweepWoken", n, reason=reason)
    return woken


def _restart_stalled_queues(now: datetime) -> int:
    """A realm's queue goes back to the stream a share per sync-worker invocation that has the realm's records; a
    queue that has handed nothing back for ``SYNC_PARK_STALL_S`` lost that chain (no record of the realm came, say
    because its last events were duplicates, or the invocation was cut short; or the realm's records kept coming
    and were parked too, each invocation counting on records to come). A share handed back here brings records
    whose invocation hands back the next share. An empty queue's entry is dropped. Returns the objects handed
    back."""
    settings = get_settings()
    released = 0
    before = int(now.timestamp() - settings.sync_park_stall_s)
    for queue in (q for q in ObjectRepository.queues().values() if q.moved_at < before):
        n = ObjectRepository.unpark(queue.sk, settings.sync_realm_share)
        if n:
            ObjectRepository.queue_moved(queue.sk, released=True, parked=False)
            released += n
        else:
            ObjectRepository.forget_queue(queue)
    return released


def _realm_of(tenant_id: str) -> str | None:
    try:
        return TenantItem.get(f"TENANT#{tenant_id}", "TENANT").realm_id
    except TenantItem.DoesNotExist:
        return None


def _is_connected(realm_id: str) -> bool:
    try:
        return ConnectionItem.get(f"REALM#{realm_id}", "CONN").status == "connected"
    except ConnectionItem.DoesNotExist:
        return False
