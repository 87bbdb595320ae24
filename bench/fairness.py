"""Fairness between realms: one flooded realm must not slow the others.

Two runs through the whole local system (HTTP ingest → stream → sync worker → QBO emulator with Intuit's limits),
each on a fresh stack with the same realms: every realm but the first gets a few completed visits with copays; in
the second run the first realm's big backlog is posted just before them. For each of the other realms' visits the
latency is webhook POST → both its QBO documents (invoice, copay) committed and recorded in the ledger
(``synced.at``). Reported: p50 / p95 of those latencies in each run and the ratio flood ÷ no flood (target ≤ 1.2).
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from bench import Options, benchmark


def _p(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _run(realms: int, visits: int, flood: int) -> dict[str, Any]:
    from infra.demo.run import onboard, post_events
    from infra.demo.scenario import pt_week
    from infra.local.system import LocalSystem
    from shared.adapters.dynamo import ObjectItem, bind_table
    from shared.services.tenants import update_tenant

    with LocalSystem(schedules_enabled=False, emulator_limits=True, emulator_process=True, quiet=True) as system:
        tenants = []
        for i in range(realms):
            tid = f"fair-{i:02d}"
            _realm, secret = onboard(system, tid, f"Fair PT {i}")
            update_tenant(tid, changes={"unapplied_copay_policy": "hold"})
            n = (flood or visits) if i == 0 else visits
            sc = pt_week(tid, appointments=n, patients=max(3, n // 5), seed=i, phi=False, copays=True, deposits=True)
            if i == 0 and not flood:
                sc.events = []
            tenants.append((tid, secret, sc))
        # Patients first (a running clinic's customers exist); the clock starts at the visits.
        for tid, secret, sc in tenants:
            post_events(system.api_url, tid, secret, [e for e in sc.events if e["type"] == "patient.upserted"])
        system.wait_idle(timeout=600)
        tid0, secret0, sc0 = tenants[0]
        if sc0.events:
            post_events(
                system.api_url,
                tid0,
                secret0,
                [e for e in sc0.events if e["type"] != "patient.upserted"],
                batch_size=100,
            )
        posted_at: dict[str, float] = {}

        def post(t: tuple[str, str, Any]) -> None:
            tid, secret, sc = t
            posted_at[tid] = time.time()
            post_events(system.api_url, tid, secret, [e for e in sc.events if e["type"] != "patient.upserted"])

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(post, tenants[1:]))
        system.wait_idle(timeout=3600)
        bind_table()
        synced: dict[tuple[str, str], float] = {}
        for o in ObjectItem.scan():
            if o.rtype == "object" and o.status == "synced" and o.synced:
                synced[(o.tenant_id, o.object_key)] = datetime.fromisoformat(o.synced["at"]).timestamp()
    latencies: list[float] = []
    missing = 0
    for tid, _secret, sc in tenants[1:]:
        for aid in sc.copaid:
            done = [synced.get((tid, f"appointment:{aid}")), synced.get((tid, f"payment:copay-{aid}"))]
            if None in done:
                missing += 1
                continue
            latencies.append(max(d for d in done if d is not None) - posted_at[tid])
    return {
        "visits_measured": len(latencies),
        "not_synced": missing,
        "p50_s": round(statistics.median(latencies), 2) if latencies else None,
        "p95_s": round(_p(latencies, 0.95), 2),
        "flooded_realm_visits": flood,
    }


def run_fairness(realms: int, visits: int, flood: int) -> dict[str, Any]:
    calm = _run(realms, visits, 0)
    flooded = _run(realms, visits, flood)
    ratio = flooded["p95_s"] / calm["p95_s"] if calm["p95_s"] else None
    return {
        "realms": realms,
        "visits_per_other_realm": visits,
        "flood_visits": flood,
        "p50_s_no_flood": calm["p50_s"],
        "p95_s_no_flood": calm["p95_s"],
        "p50_s_flood": flooded["p50_s"],
        "p95_s_flood": flooded["p95_s"],
        "p95_ratio_flood_vs_no_flood": round(ratio, 2) if ratio else None,
        "not_synced": calm["not_synced"] + flooded["not_synced"],
    }


@benchmark("realm_fairness", group="throughput", summary="20 realms, one flooded: the others' p95 webhook→QBO ratio")
def realm_fairness(opts: Options) -> dict[str, Any]:
    if opts.quick:
        return run_fairness(realms=6, visits=4, flood=200)
    return run_fairness(realms=20, visits=5, flood=1000)
