"""The chaos soak (``make soak``; ``python -m bench.soak [--quick] [--visits N --tenants N --realms N]``).

Visits with their payments and credits for several tenants sharing QuickBooks companies (two tenants per realm
by default) go through the whole local system (HTTP ingest → stream → sync worker → QBO emulator with Intuit's
limits) while everything that goes wrong in production goes wrong at once: duplicated and reordered deliveries,
QBO 5xx, throttling storms, commit-then-drop (QBO commits, the answer is lost), an outage, an expired access
token, a revoked connection that the admin reconnects through the OAuth routes, and a sync worker killed in the
middle of a batch (after a QBO commit: before the ledger knows the QBO id, and after the reconcile returned).

The retry sweep runs every few seconds while faults are active; at the end faults are cleared and the sweep is
driven until nothing is left to do. Pass means: no duplicate in QuickBooks, every accepted event accounted for,
and per tenant the invoiced, received, credited and open totals in QuickBooks equal the platform's, to the cent.

Chaos hooks live only here (monkeypatches of the in-process handlers); product code has none.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench import Options, benchmark
from bench.logtap import LogTap

RESULTS = Path(__file__).resolve().parent / "results"
MARKER = re.compile(r"qbsync:[A-Z2-7]{6}:\S+")
UNRESOLVED = ("pending", "retrying", "waiting", "held")


@dataclass
class SoakConfig:
    visits: int = 5000
    tenants: int = 10
    realms: int = 5
    seed: int = 11
    dup_rate: float = 0.30
    reorder_rate: float = 0.20
    reorder_span: int = 40  # a reordered event moves up to this many places
    error_rate: float = 0.10  # QBO 5xx
    drop_rate: float = 0.02  # commit-then-drop on writes
    throttle_s: float = 4.0  # one throttling storm (429s)
    throttle_storms: int = 3
    outage_s: float = 60.0
    kill_after_commit: float = 0.01  # worker killed after a QBO commit, before the ledger stored the id
    kill_after_reconcile: float = 0.02  # worker killed after a reconcile returned (stream re-delivers the batch)
    kill_reconcile_nth: int = 10  # and always at the n-th reconcile that returns, so even a short run has one
    lease_s: int = 120  # = the sync worker's Lambda timeout: how long a killed worker's lease blocks the object
    sweep_every_s: float = 5.0
    park_stall_s: float = 60.0  # SYNC_PARK_STALL_S: the sweep restarts a realm's queue that stopped moving
    phases: int = 8
    settle_timeout_s: float = 3600.0
    drain_under_faults_s: float = 600.0  # how long the tail of the work drains with faults still on
    batch_size: int = 25
    retry_base_s: float = 5.0  # the product's default backoff (5, 10, 20 ... s); the short soak shortens it
    echo_logs: bool = True  # the handlers' logs also go to stdout (they are always kept for the privacy scan)

    @classmethod
    def quick(cls) -> SoakConfig:
        return cls(
            visits=60,
            tenants=3,
            realms=2,
            outage_s=6.0,
            throttle_s=2.0,
            throttle_storms=1,
            kill_after_commit=0.03,
            kill_after_reconcile=0.05,
            lease_s=20,
            sweep_every_s=2.0,
            park_stall_s=5.0,
            phases=6,
            settle_timeout_s=240.0,
            drain_under_faults_s=20.0,
            retry_base_s=1.0,
        )


@dataclass
class TenantPlan:
    tenant_id: str
    realm_id: str
    secret: str
    prefix: str
    scenario: Any
    order: list[dict[str, Any]] = field(default_factory=list)
    accepted: set[str] = field(default_factory=set)


# ============================================================================ chaos inside the worker
class WorkerKiller:
    """Simulates a Lambda crash: raises out of the in-process sync worker (the stream re-delivers the batch)."""

    def __init__(self, seed: int, after_commit: float, after_reconcile: float, reconcile_nth: int = 0) -> None:
        self.rnd = random.Random(seed)
        self.reconcile_nth = reconcile_nth
        self.reconciles = 0
        self.after_commit = after_commit
        self.after_reconcile = after_reconcile
        self.lock = threading.Lock()
        self.killed: Counter[str] = Counter()
        self.enabled = True

    def roll(self, rate: float, kind: str) -> bool:
        with self.lock:
            if self.enabled and rate and self.rnd.random() < rate:
                self.killed[kind] += 1
                return True
        return False

    def kill_reconcile(self) -> bool:
        """Whether the worker dies after this reconcile: the n-th one for sure, the others at the configured rate."""
        with self.lock:
            self.reconciles += 1
            if self.enabled and self.reconciles == self.reconcile_nth:
                self.killed["after_reconcile"] += 1
                return True
        return self.roll(self.after_reconcile, "after_reconcile")

    @contextmanager
    def installed(self, lease_s: int) -> Iterator[WorkerKiller]:
        from shared.adapters.objects import ObjectRepository
        from shared.services.sync import SyncService

        orig_reconcile, orig_remember, orig_claim = SyncService.reconcile, SyncService._remember, ObjectRepository.claim
        killer = self

        def reconcile(self: Any, tenant_id: str, object_key: str, **kw: Any) -> Any:
            outcome = orig_reconcile(self, tenant_id, object_key, **kw)
            if outcome is not None and killer.kill_reconcile():
                raise RuntimeError("chaos: sync worker killed after the reconcile returned")
            return outcome

        def remember(self: Any, item: Any, slot: str, entity: str, row: dict[str, Any], *a: Any, **kw: Any) -> Any:
            first_time = (item.qbo or {}).get(slot, {}).get("id") != str(row.get("Id"))
            if first_time and killer.roll(killer.after_commit, "after_commit"):
                # QBO committed; the worker dies before the ledger stores the id (its lease stays until it expires).
                raise RuntimeError(f"chaos: sync worker killed after QBO committed {entity} {row.get('Id')}")
            return orig_remember(self, item, slot, entity, row, *a, **kw)

        def claim(self: Any, tenant_id: str, object_key: str, lease_s_: int = 120, **kw: Any) -> Any:
            # The lease a killed worker leaves behind lasts the function timeout; the quick soak uses a shorter one.
            return orig_claim(self, tenant_id, object_key, min(int(kw.pop("lease_s", lease_s_)), lease_s), **kw)

        SyncService.reconcile = reconcile  # type: ignore[method-assign]
        SyncService._remember = remember  # type: ignore[method-assign]
        ObjectRepository.claim = claim  # type: ignore[method-assign]
        try:
            yield self
        finally:
            SyncService.reconcile = orig_reconcile  # type: ignore[method-assign]
            SyncService._remember = orig_remember  # type: ignore[method-assign]
            ObjectRepository.claim = orig_claim  # type: ignore[method-assign]


# ============================================================================ deliveries
def chaos_order(
    events: list[dict[str, Any]], rnd: random.Random, dup_rate: float, reorder_rate: float, span: int
) -> tuple[list[dict[str, Any]], int, int]:
    """Each event moved up to ``span`` places with ``reorder_rate``; ``dup_rate`` of them delivered again later."""
    keyed = [(i + (rnd.uniform(-span, span) if rnd.random() < reorder_rate else 0.0), i) for i in range(len(events))]
    keyed.sort()
    out = [events[i] for _, i in keyed]
    reordered = sum(1 for pos, (_, i) in enumerate(keyed) if pos != i)
    dups = [(i, e) for i, e in enumerate(out) if rnd.random() < dup_rate]
    for i, e in reversed(dups):
        out.insert(min(len(out), i + 1 + rnd.randrange(span * 2)), e)
    return out, reordered, len(dups)


# ============================================================================ the run
def run_soak(cfg: SoakConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    from infra.local.system import LocalSystem

    started = time.monotonic()
    killer = WorkerKiller(cfg.seed, cfg.kill_after_commit, cfg.kill_after_reconcile, cfg.kill_reconcile_nth)
    with (
        LogTap(echo=cfg.echo_logs) as tap,
        killer.installed(cfg.lease_s),
        LocalSystem(
            schedules_enabled=False,
            emulator_limits=True,
            env={"RETRY_BASE_S": f"{cfg.retry_base_s:g}", "SYNC_PARK_STALL_S": f"{cfg.park_stall_s:g}"},
        ) as system,
    ):
        log(f"local system up in {time.monotonic() - started:.1f}s")
        plans = _onboard_all(system, cfg)
        log(f"{len(plans)} tenants on {cfg.realms} realms onboarded")
        report = _drive(system, cfg, plans, killer, log)
        report["killed_workers"] = dict(killer.killed)
        report["privacy"] = _privacy_scan(system, plans, tap.text())
        report["ok"] = report["ok"] and report["privacy"]["ok"]
    report["seconds"] = round(time.monotonic() - started, 1)
    report["config"] = asdict(cfg)
    return report


def _onboard_all(system: Any, cfg: SoakConfig) -> list[TenantPlan]:
    from infra.demo.company import mappings, setup_company
    from infra.demo.run import connect_through_oauth
    from infra.demo.scenario import pt_week
    from shared.services.tenants import create_tenant, update_tenant

    control = system.control
    realms = []
    for r in range(cfg.realms):
        realm = str(control.create_realm(company_name=f"Soak Billing Co {r + 1}")["realm_id"])
        setup_company(control, realm)
        realms.append(realm)
    plans = []
    rnd = random.Random(cfg.seed)
    per_tenant = [cfg.visits // cfg.tenants + (1 if t < cfg.visits % cfg.tenants else 0) for t in range(cfg.tenants)]
    for t in range(cfg.tenants):
        tid, prefix = f"soak-lab-{t + 1:02d}", f"S{t + 1:02d}"
        realm = realms[t % cfg.realms]
        created = create_tenant(tid, f"Soak Lab {t + 1}", settings={"doc_number_prefix": prefix})
        connect_through_oauth(system.api_url, tid, realm)
        update_tenant(tid, changes={f"mappings.{k}": v for k, v in mappings().items()})
        visits = per_tenant[t]
        sc = pt_week(
            tid,
            appointments=visits,
            patients=max(6, visits // 8),
            seed=cfg.seed * 100 + t,
            phi=True,
            copays=True,
            remittances=True,
            write_off=True,
            refund=True,
        )
        plan = TenantPlan(tid, realm, created.signing_secret, prefix, sc)
        plan.order, _, _ = chaos_order(list(sc.events), rnd, cfg.dup_rate, cfg.reorder_rate, cfg.reorder_span)
        plans.append(plan)
    return plans


def _drive(system: Any, cfg: SoakConfig, plans: list[TenantPlan], killer: WorkerKiller, log: Any) -> dict[str, Any]:
    from infra.demo.run import connect_through_oauth, post_events

    control, stack = system.control, system.stack
    realms = sorted({p.realm_id for p in plans})
    tenant_of_realm = {p.realm_id: p.tenant_id for p in reversed(plans)}
    chaos_log: list[str] = []

    def note(msg: str) -> None:
        chaos_log.append(f"{time.monotonic() - t0:7.1f}s {msg}")
        log(chaos_log[-1])

    # ---- background: the retry sweep, as the one-minute schedule would (faster, so the run is not all waiting)
    stop = threading.Event()
    sweeps = Counter[str]()

    def sweeper() -> None:
        while not stop.wait(cfg.sweep_every_s):
            try:
                woken = stack.trigger_schedule("RetrySweepFunction") or {}
                sweeps["runs"] += 1
                for k, v in (woken if isinstance(woken, dict) else {}).items():
                    if isinstance(v, int):
                        sweeps[k] += v
            except Exception as exc:  # a sweep failing under chaos is retried next time, as the schedule would
                sweeps["errors"] += 1
                log(f"sweep failed: {exc!r}")

    # ---- the fault timeline: one step before each phase of deliveries, so every fault meets live traffic
    base = {"error_rate": cfg.error_rate, "error_status": 503, "commit_then_drop": {"rate": cfg.drop_rate}}
    revoked = realms[-1]
    expired = realms[0]
    steps: list[tuple[str, Callable[[], None]]] = [
        ("5xx + commit-then-drop on every realm", lambda: [control.set_faults(r, **base) for r in realms] and None),
    ]
    for n in range(cfg.throttle_storms):
        r = realms[n % len(realms)]
        steps.append(
            (
                f"throttling storm {cfg.throttle_s:.0f}s on {r}",
                lambda r=r: control.set_faults(r, throttle_seconds=cfg.throttle_s),
            )
        )
    steps += [
        (
            f"QBO outage {cfg.outage_s:.0f}s on {realms[0]}",
            lambda: control.set_faults(realms[0], outage_seconds=cfg.outage_s),
        ),
        (f"access tokens expired on {expired}", lambda: control.expire_tokens(expired)),
        (f"connection revoked on {revoked}", lambda: control.revoke_tokens(revoked)),
    ]
    reconnect_at = len(steps) + 1  # a phase later: held work piles up first

    def reconnect() -> None:
        for attempt in range(20):  # the admin retries when QuickBooks answers 5xx during the consent callback
            try:
                connect_through_oauth(system.api_url, tenant_of_realm[revoked], revoked)
                note(f"reconnected {revoked} through the OAuth routes (attempt {attempt + 1})")
                return
            except Exception as exc:
                time.sleep(1.0)
                last = exc
        raise RuntimeError(f"reconnect kept failing: {last!r}")

    phases = max(cfg.phases, reconnect_at + 1)
    chunks: list[list[list[dict[str, Any]]]] = []
    for p in plans:
        size = -(-len(p.order) // phases)
        chunks.append([p.order[i * size : (i + 1) * size] for i in range(phases)])

    t0 = time.monotonic()
    sweep_thread = threading.Thread(target=sweeper, daemon=True)
    sweep_thread.start()
    posted_events = 0
    try:
        with ThreadPoolExecutor(max_workers=min(4, len(plans))) as pool:
            for phase in range(phases):
                if phase < len(steps):
                    name, act = steps[phase]
                    act()
                    note(name)
                if phase == reconnect_at:
                    reconnect()

                def post(i: int, phase: int = phase) -> int:
                    p = plans[i]
                    batch = chunks[i][phase]
                    p.accepted |= post_events(system.api_url, p.tenant_id, p.secret, batch, batch_size=cfg.batch_size)
                    return len(batch)

                posted_events += sum(pool.map(post, range(len(plans))))
                note(f"phase {phase + 1}/{phases}: {posted_events} deliveries posted")
                time.sleep(min(2.0, cfg.sweep_every_s))
        if reconnect_at >= phases:
            reconnect()
        # Let the faults bite while the tail of the work drains.
        _wait_idle(system, cfg.drain_under_faults_s, log)
        note("stream drained under faults; clearing faults")
        for r in realms:
            control.clear_faults(r)
        killer.enabled = False
        _ensure_connected(system, plans, log)
        settle = _settle(system, plans, cfg, log)
        note(f"settled: {settle}")
    finally:
        stop.set()
        sweep_thread.join(timeout=30)

    report = _report(system, plans, log)
    report["chaos"] = chaos_log
    report["sweeps"] = dict(sweeps)
    report["deliveries_posted"] = posted_events
    report["sync_seconds"] = round(time.monotonic() - t0, 1)
    report["qbo_stats"] = {r: control.stats(r) for r in realms}
    report["stack_stats"] = {k: v for k, v in stack.stats().items() if k in ("invocations", "errors", "retries")}
    return report


def _wait_idle(system: Any, timeout: float, log: Any) -> None:
    try:
        system.wait_idle(timeout=timeout)
    except TimeoutError as exc:
        log(f"not idle after {timeout}s: {exc}")


def _ensure_connected(system: Any, plans: list[TenantPlan], log: Any) -> None:
    from infra.demo.run import connect_through_oauth
    from shared.adapters.dynamo import ConnectionItem, bind_table

    bind_table()
    for realm in sorted({p.realm_id for p in plans}):
        conn = ConnectionItem.get(f"REALM#{realm}", "CONN", consistent_read=True)
        if conn.status != "connected":
            tenant = next(p.tenant_id for p in plans if p.realm_id == realm)
            log(f"{realm} is {conn.status}: reconnecting")
            connect_through_oauth(system.api_url, tenant, realm)


def _pending(plans: list[TenantPlan]) -> tuple[Counter[str], float | None]:
    """Objects not yet at rest (and the earliest time a retrying one is due)."""
    from datetime import datetime

    from shared.adapters.dynamo import ObjectItem, bind_table

    bind_table()
    tenants = {p.tenant_id for p in plans}
    left: Counter[str] = Counter()
    due: float | None = None
    for o in ObjectItem.scan(consistent_read=True):
        if o.rtype != "object" or o.tenant_id not in tenants:
            continue
        if o.dirty or o.status in UNRESOLVED:
            left["dirty" if o.dirty else o.status] += 1
            if o.status == "retrying" and o.next_attempt_at:
                at = datetime.fromisoformat(o.next_attempt_at).timestamp()
                due = at if due is None else min(due, at)
    return left, due


def _settle(system: Any, plans: list[TenantPlan], cfg: SoakConfig, log: Any) -> dict[str, Any]:
    """Faults cleared: sweep and wait until every object is at rest (or the time budget is spent)."""
    deadline = time.monotonic() + cfg.settle_timeout_s
    rounds = 0
    left: Counter[str] = Counter()
    same = 0
    while time.monotonic() < deadline:
        rounds += 1
        before = dict(left)
        system.stack.trigger_schedule("RetrySweepFunction")
        _wait_idle(system, max(5.0, deadline - time.monotonic()), log)
        left, due = _pending(plans)
        if not left:
            break
        same = same + 1 if dict(left) == before and "retrying" not in left else 0
        if same >= max(6, int(cfg.lease_s / cfg.sweep_every_s) + 3):
            log(f"no progress for {same} rounds: giving up on {dict(left)}")
            break
        wait = min(max(1.0, (due - time.time()) + 0.5) if due else cfg.sweep_every_s, 30.0)
        log(f"settling (round {rounds}): {dict(left)}; next sweep in {wait:.0f}s")
        time.sleep(wait)
    return {"rounds": rounds, "left": dict(left)}


# ============================================================================ the report
def _report(system: Any, plans: list[TenantPlan], log: Any) -> dict[str, Any]:
    from infra.demo.run import DemoResult, account
    from shared.adapters.dynamo import ObjectItem, bind_table

    bind_table()
    objects: dict[str, list[Any]] = defaultdict(list)
    for o in ObjectItem.scan(consistent_read=True):
        if o.rtype == "object":
            objects[o.tenant_id].append(o)
    tenants: dict[str, Any] = {}
    events_by_status: Counter[str] = Counter()
    unaccounted: list[str] = []
    for p in plans:
        res = DemoResult(tenant_id=p.tenant_id, realm_id=p.realm_id, accepted=len(p.accepted))
        account(res, p.accepted, objects[p.tenant_id])  # one ledger scan for all tenants, not one each
        unaccounted += [f"{p.tenant_id} {u}" for u in res.unaccounted]
        status_of = {o.object_key: o.status for o in objects[p.tenant_id]}
        for event_id in p.accepted:  # the events account() just read, not read again
            key = res.event_objects.get(event_id)
            events_by_status["not stored" if key is None else status_of.get(key, "missing")] += 1
        tenants[p.tenant_id] = {
            "realm": p.realm_id,
            "deliveries": len(p.order),
            "events": len(p.scenario.events),
            "accepted": len(p.accepted),
            "objects_by_status": res.statuses,
            "reasons": res.reasons,
            "unaccounted": len(res.unaccounted),
        }
    stuck = _stuck(plans, objects)
    duplicates, orphans = _qbo_checks(system, plans, objects, tenants)
    totals_ok = all(t["totals_ok"] for t in tenants.values())
    accepted = sum(len(p.accepted) for p in plans)
    ok = not duplicates and not orphans and not unaccounted and totals_ok and accepted > 0
    return {
        "ok": ok,
        "events_accepted": accepted,
        "events_by_object_status": dict(events_by_status),
        "synced": events_by_status.get("synced", 0),
        "held": events_by_status.get("held", 0),
        "excluded": events_by_status.get("excluded", 0),
        "failed": events_by_status.get("failed", 0),
        "skipped": events_by_status.get("skipped", 0),
        "unaccounted": len(unaccounted),
        "unaccounted_sample": unaccounted[:20],
        "duplicates_in_qbo": len(duplicates),
        "duplicates_sample": duplicates[:20],
        "qbsync_documents_not_in_ledger": len(orphans),
        "orphans_sample": orphans[:20],
        "totals_ok": totals_ok,
        "not_at_rest": stuck,
        "tenants": tenants,
    }


def _privacy_scan(system: Any, plans: list[TenantPlan], logs: str) -> dict[str, Any]:
    """PHI stays home, tokens stay out of logs: every request the QBO emulator received (path, query, whole body)
    and everything logged during the run (``LogTap``) are scanned for every patient's PHI (the default naming
    policy: no names either), and the logs for token material (every access / refresh token and code the
    emulator issued, the OAuth app's secret, the webhook verifier token, each tenant's signing secret)."""
    phi: dict[str, str] = {}
    for p in plans:
        phi.update({v: f"{p.tenant_id} {label}" for label, v in p.scenario.phi_values().items()})
    emu = system.emulator.emulator  # in this process: the whole request log without a 100 MB JSON answer
    with emu.lock:
        entries = list(emu.requests)
    with emu.oauth.lock:
        state = emu.oauth.state
        issued = {**{t: "access token" for t in state.access}, **{t: "refresh token" for t in state.refresh}}
        issued.update({c: "authorization code" for c in state.codes})
    tokens = {
        **issued,
        system.client_secret: "OAuth app client secret",
        system.verifier_token: "QBO webhook verifier token",
        **{p.secret: f"{p.tenant_id} signing secret" for p in plans},
    }
    sent = "\n".join(f"{e['method']} {e['path']}?{e['query']} {e['body']}" for e in entries)

    def found(text: str, needles: dict[str, str]) -> list[str]:
        return sorted({label for value, label in needles.items() if value and value in text})

    in_requests, in_logs, tokens_in_logs = found(sent, phi), found(logs, phi), found(logs, tokens)
    return {
        "ok": bool(entries) and bool(logs) and not (in_requests or in_logs or tokens_in_logs),
        "phi_values": len(phi),
        "qbo_requests_scanned": len(entries),
        "qbo_request_bytes": len(sent),
        "log_lines_scanned": logs.count("\n"),
        "log_bytes": len(logs),
        "token_values": len(tokens),
        "phi_in_qbo_requests": in_requests[:20],
        "phi_in_logs": in_logs[:20],
        "token_material_in_logs": tokens_in_logs[:20],
    }


def _stuck(plans: list[TenantPlan], objects: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Objects not at rest, with what explains them (lease, versions, intents, their events' outcomes)."""
    from shared.adapters.objects import events_of

    out = []
    now = time.time()
    for p in plans:
        for o in objects[p.tenant_id]:
            if not (o.dirty or o.status in UNRESOLVED):
                continue
            out.append(
                {
                    "object": f"{p.tenant_id} {o.object_key}",
                    "status": o.status,
                    "reason": o.status_reason,
                    "dirty": o.dirty,
                    "desired_version": o.desired_version,
                    "synced_version": o.synced_version,
                    "lease_left_s": round(o.lease_until - now, 1) if o.lease_until else None,
                    "attempts": o.attempts,
                    "waiting_on": o.waiting_on,
                    "intents": sorted((o.intent or {}).get("slots", {}) or {}),
                    "slots": sorted(o.qbo or {}),
                    "updated_at": o.updated_at,
                    "events": [f"{e.type} v{e.version} {e.outcome}" for e in events_of(p.tenant_id, o.object_key)],
                }
            )
    return out


def _money(v: Any) -> Decimal:
    return Decimal(str(v or 0)).quantize(Decimal("0.01"))


def _qbo_checks(
    system: Any, plans: list[TenantPlan], objects: dict[str, list[Any]], tenants: dict[str, Any]
) -> tuple[list[str], list[str]]:
    """Duplicates per realm; every qbsync document mapped back to its tenant through the ledger's slots; totals."""
    control = system.control
    duplicates: list[str] = []
    orphans: list[str] = []
    owner: dict[tuple[str, str, str], str] = {}  # (realm, entity, id) -> tenant
    for p in plans:
        for o in objects[p.tenant_id]:
            for slot in (o.qbo or {}).values():
                if isinstance(slot, dict) and slot.get("id") and slot.get("state") != "deleted":
                    owner[(p.realm_id, str(slot.get("type")), str(slot["id"]))] = p.tenant_id
    sums: dict[str, Counter[str]] = defaultdict(Counter)
    for realm in sorted({p.realm_id for p in plans}):
        books = control.books(realm)
        for entity, key in (("Invoice", "DocNumber"), ("CreditMemo", "DocNumber"), ("RefundReceipt", "DocNumber")):
            seen = Counter(str(d.get(key)) for d in books.get(entity, []) if d.get(key))
            duplicates += [f"{realm} {entity} {key} {k} x{n}" for k, n in seen.items() if n > 1]
        seen = Counter(str(c.get("DisplayName")) for c in books.get("Customer", []))
        duplicates += [f"{realm} Customer DisplayName {k} x{n}" for k, n in seen.items() if n > 1]
        for entity in ("Payment", "CreditMemo", "RefundReceipt", "Invoice", "Customer"):
            markers = Counter(
                m.group(0)
                for d in books.get(entity, [])
                for m in [MARKER.search(f"{d.get('PrivateNote', '')} {d.get('Notes', '')}")]
                if m
            )
            duplicates += [f"{realm} {entity} marker {k} x{n}" for k, n in markers.items() if n > 1]
        for entity in ("Invoice", "Payment", "CreditMemo", "RefundReceipt", "Customer"):
            for d in books.get(entity, []):
                tenant = owner.get((realm, entity, str(d["Id"])))
                if tenant is None:
                    if (
                        entity == "Customer"
                        and not MARKER.search(str(d.get("Notes", "")))
                        and not str(d.get("DisplayName", "")).startswith(("Patient ", "Account "))
                    ):
                        continue  # the company's own customers
                    orphans.append(f"{realm} {entity} {d['Id']} {d.get('DocNumber') or d.get('DisplayName') or ''}")
                    continue
                s = sums[tenant]
                if entity == "Invoice":
                    s["invoiced"] += _money(d.get("TotalAmt"))
                    s["open_balance"] += _money(d.get("Balance"))
                    s["invoices"] += 1
                elif entity == "Payment":
                    s["received"] += _money(d.get("TotalAmt"))
                    s["payments"] += 1
                elif entity == "CreditMemo":
                    s["credited"] += _money(d.get("TotalAmt"))
                elif entity == "RefundReceipt":
                    s["refunded"] += _money(d.get("TotalAmt"))
    for p in plans:
        sc, s = p.scenario, sums[p.tenant_id]
        expected = {
            "invoiced": sc.total,
            "received": sc.received,
            "credited": sc.credited_total,
            "open_balance": sc.open_balance,
        }
        in_qbo = {
            "invoiced": Decimal(s["invoiced"]),
            # a refund is a RefundReceipt (or a reduced payment, by policy): net money in either way
            "received": Decimal(s["received"]) - Decimal(s["refunded"]),
            "credited": Decimal(s["credited"]),
            "open_balance": Decimal(s["open_balance"]),
        }
        t = tenants[p.tenant_id]
        t["expected"] = {k: str(v) for k, v in expected.items()}
        t["in_qbo"] = {k: str(v) for k, v in in_qbo.items()}
        t["invoices"] = {"expected": len(sc.invoiced), "in_qbo": int(s["invoices"])}
        t["refunded"] = {"expected": str(sc.refunded), "in_qbo": str(Decimal(s["refunded"]))}
        t["totals_ok"] = expected == in_qbo and len(sc.invoiced) == int(s["invoices"])
    return duplicates, orphans


# ============================================================================ printing, CLI, registry
def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    summary = Table(title="chaos soak", show_header=False)
    for key in (
        "events_accepted",
        "synced",
        "skipped",
        "held",
        "excluded",
        "failed",
        "unaccounted",
        "duplicates_in_qbo",
        "qbsync_documents_not_in_ledger",
        "totals_ok",
        "deliveries_posted",
        "killed_workers",
        "sweeps",
        "sync_seconds",
        "seconds",
    ):
        summary.add_row(key, str(report.get(key)))
    pv = report.get("privacy") or {}
    summary.add_row(
        "privacy scan",
        f"{pv.get('phi_values')} PHI values in {pv.get('qbo_requests_scanned')} QBO requests "
        f"({pv.get('qbo_request_bytes', 0) / 1e6:.1f} MB) and {pv.get('log_lines_scanned')} log lines: "
        f"PHI in requests {pv.get('phi_in_qbo_requests')}, in logs {pv.get('phi_in_logs')}; "
        f"{pv.get('token_values')} token values, in logs {pv.get('token_material_in_logs')}",
    )
    console.print(summary)
    per = Table(title="per tenant: QuickBooks vs the platform")
    for col in ("tenant", "realm", "accepted", "invoices", "invoiced", "received", "credited", "open", "ok"):
        per.add_column(col, justify="right" if col not in ("tenant", "realm") else "left")
    for tid, t in report["tenants"].items():
        exp, got = t["expected"], t["in_qbo"]

        def cell(k: str, exp: dict[str, str] = exp, got: dict[str, str] = got) -> str:
            return got[k] if got[k] == exp[k] else f"[red]{got[k]} ≠ {exp[k]}[/red]"

        inv = t["invoices"]
        per.add_row(
            tid,
            t["realm"],
            str(t["accepted"]),
            f"{inv['in_qbo']}/{inv['expected']}",
            cell("invoiced"),
            cell("received"),
            cell("credited"),
            cell("open_balance"),
            "[green]yes[/green]" if t["totals_ok"] else "[red]NO[/red]",
        )
    console.print(per)
    for key in ("unaccounted_sample", "duplicates_sample", "orphans_sample"):
        if report.get(key):
            console.print(f"[red]{key}[/red]: {report[key]}")
    console.print("[bold green]PASS[/bold green]" if report["ok"] else "[bold red]FAIL[/bold red]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small version (what make test runs, roughly)")
    parser.add_argument("--visits", type=int)
    parser.add_argument("--tenants", type=int)
    parser.add_argument("--realms", type=int)
    parser.add_argument("--outage", type=float, help="outage seconds (default 60, quick 6)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    args = parser.parse_args(argv)
    cfg = SoakConfig.quick() if args.quick else SoakConfig()
    for name, value in (("visits", args.visits), ("tenants", args.tenants), ("realms", args.realms)):
        if value is not None:
            setattr(cfg, name, value)
    if args.outage is not None:
        cfg.outage_s = args.outage
    if args.seed is not None:
        cfg.seed = args.seed
    if cfg.realms > cfg.tenants:
        parser.error("--realms must not exceed --tenants")
    report = run_soak(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_report(report)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0 if report["ok"] else 1


@benchmark("chaos_soak", group="soak", summary="visits + money for tenants sharing realms under every QBO fault")
def chaos_soak(opts: Options) -> dict[str, Any]:
    report = run_soak(SoakConfig.quick() if opts.quick else SoakConfig())
    return {k: v for k, v in report.items() if not isinstance(v, dict | list)}


if __name__ == "__main__":
    raise SystemExit(main())
