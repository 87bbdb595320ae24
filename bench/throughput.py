"""Throughput per realm through the whole local system (HTTP ingest → stream → sync worker → QBO emulator with
Intuit's limits on): completed visits with copays for one realm, invoice + payment pairs per minute as a
fraction of the realm's ceiling, HTTP calls / writes / metered reads per synced visit, 429s seen.

The ceiling: QBO allows 40 batch calls a minute of up to 30 items, so a realm can take at most 1,200 writes a
minute through /batch; a visit with a copay needs 2 writes (invoice, payment), so 600 visits/min.
"""

from __future__ import annotations

import time
from typing import Any

from bench import Options, benchmark

BATCH_CALLS_PER_MIN = 40
BATCH_ITEMS = 30
WRITES_PER_VISIT = 2


def run_throughput(visits: int, patients: int) -> dict[str, Any]:
    from infra.demo.run import onboard, post_events
    from infra.demo.scenario import pt_week
    from infra.local.system import LocalSystem
    from shared.adapters.dynamo import ObjectItem, bind_table

    # Schedules (CDC and retry sweeps) are maintenance, not the sync path: off, so they neither add metered
    # reads nor keep the stack from going idle.
    with LocalSystem(schedules_enabled=False, emulator_limits=True) as system:
        control = system.control
        realm, secret = onboard(system, "bench-clinic", "Bench PT")
        sc = pt_week("bench-clinic", appointments=visits, patients=patients, seed=3, phi=False, copays=True)
        before = control.stats(realm)
        started = time.monotonic()
        post_events(system.api_url, "bench-clinic", secret, sc.events, batch_size=100)
        posted = time.monotonic() - started
        system.wait_idle(timeout=3600)
        elapsed = time.monotonic() - started
        after = control.stats(realm)
        bind_table()
        objs = [o for o in ObjectItem.scan() if o.rtype == "object" and o.tenant_id == "bench-clinic"]
        books = control.books(realm)
    delta = {
        k: after.get(k, 0) - before.get(k, 0) for k in ("requests", "reads", "writes", "queries", "batch", "throttled")
    }
    synced_visits = sum(1 for o in objs if o.kind == "appointment" and o.status == "synced")
    per_min = synced_visits / elapsed * 60
    ceiling = BATCH_CALLS_PER_MIN * BATCH_ITEMS / WRITES_PER_VISIT
    return {
        "visits": visits,
        "synced_visits": synced_visits,
        "invoices_in_qbo": len(books.get("Invoice", [])),
        "payments_in_qbo": len(books.get("Payment", [])),
        "seconds_total": round(elapsed, 1),
        "seconds_posting": round(posted, 1),
        "visits_per_min": round(per_min, 1),
        "ceiling_visits_per_min": ceiling,
        "fraction_of_ceiling": round(per_min / ceiling, 3),
        "http_calls_per_visit": round(delta["requests"] / max(synced_visits, 1), 3),
        "batch_calls": delta["batch"],
        "metered_reads_per_visit": round((delta["reads"] + delta["queries"]) / max(synced_visits, 1), 3),
        "throttled_429": delta["throttled"],
        "statuses": {s: sum(1 for o in objs if o.status == s) for s in sorted({o.status for o in objs})},
    }


@benchmark("realm_throughput", group="throughput", summary="visits+copays for one realm through the local system")
def realm_throughput(opts: Options) -> dict[str, Any]:
    return run_throughput(visits=300 if opts.quick else 2000, patients=60 if opts.quick else 400)
