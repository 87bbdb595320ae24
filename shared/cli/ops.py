"""Ops commands over the ops API: ``failures``, ``dlq``, ``status``, ``connections``, ``mappings``,
``customers``. Every command has ``--help`` and ``--json``; people get rich tables, bulk actions a progress
bar. The API is found with ``--api-url`` / ``QBSYNC_API_URL``; requests are SigV4-signed with your AWS
credentials, or carry ``QBSYNC_OPS_KEY`` on the local stack.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from shared.cli.ops_client import OpsClient, seg
from shared.cli.output import emit, json_option, progress

FAILURE_COLUMNS = ("tenant_id", "object_key", "failure_kind", "message", "suggested_fix", "attempts", "updated_at")
BULK_CHUNK = 25


def api_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--api-url", envvar="QBSYNC_API_URL", help="Ops API base URL (env QBSYNC_API_URL).")(fn)
    fn = click.option("--actor", envvar="QBSYNC_ACTOR", help="Your name in the audit log (local stack only).")(fn)
    return fn


def _client(api_url: str | None, actor: str | None) -> OpsClient:
    return OpsClient(api_url, actor=actor)


def _bulk(client: OpsClient, path: str, keys: list[str], body: dict[str, Any], as_json: bool) -> dict[str, Any]:
    """POST keys in chunks (progress bar for people); merged results."""
    merged: dict[str, Any] = {"errors": {}}
    chunks = [keys[i : i + BULK_CHUNK] for i in range(0, len(keys), BULK_CHUNK)] or [[]]
    for chunk in progress(
        chunks, label=path.rsplit("/", 1)[-1], total=len(chunks), enabled=not as_json and len(chunks) > 1
    ):
        out = client.call("POST", path, body={**body, "object_keys": chunk})
        for k, v in out.items():
            if isinstance(v, list):
                merged.setdefault(k, []).extend(v)
            elif isinstance(v, dict):
                merged.setdefault(k, {}).update(v)
    return merged


# ====================================================================== failures
@click.group()
def failures() -> None:
    """Failed syncs: list, show, retry, exclude, manual entry, audit log."""


@failures.command("list")
@click.option("--tenant", help="Only this tenant.")
@click.option("--kind", help="Failure kind (missing_mapping, qbo_6000, retries_exhausted, phi_blocked, ...).")
@click.option("--object-kind", help="appointment, invoice, payment, remittance, credit, patient.")
@click.option("--older-than", help="Only failures older than this (30m, 6h, 2d).")
@click.option("--limit", default=500, show_default=True)
@api_options
@json_option
def failures_list(
    tenant: str | None,
    kind: str | None,
    object_kind: str | None,
    older_than: str | None,
    limit: int,
    api_url: str | None,
    actor: str | None,
    as_json: bool,
) -> None:
    """List failed objects with counts by kind."""
    query = {"tenant": tenant, "kind": kind, "object_kind": object_kind, "older_than": older_than, "limit": limit}
    out = _client(api_url, actor).call("GET", "/ops/failures", query=query)
    if as_json:
        emit(out, as_json=True)
        return
    emit(out["items"], as_json=False, columns=FAILURE_COLUMNS, title=f"{out['total']} failed")
    emit(out["counts"], as_json=False, title="by kind")


@failures.command("show")
@click.argument("tenant")
@click.argument("object_key")
@api_options
@json_option
def failures_show(tenant: str, object_key: str, api_url: str | None, actor: str | None, as_json: bool) -> None:
    """One failure: timeline, QBO fault (code, detail, intuit_tid), attempts, PHI-free payload, suggested fix."""
    out = _client(api_url, actor).call("GET", f"/ops/failures/{seg(tenant)}/{seg(object_key)}")
    if as_json:
        emit(out, as_json=True)
        return
    head = {k: v for k, v in out.items() if k not in ("timeline", "audit", "payload", "error", "qbo")}
    emit(head, as_json=False, title=f"{tenant} {object_key}")
    emit(out["error"], as_json=False, title="error")
    emit(out["payload"], as_json=False, title="payload (PHI-free)")
    emit(out["timeline"], as_json=False, title="timeline")
    if out["audit"]:
        emit(out["audit"], as_json=False, title="audit")


def _keys_command(name: str, path: str, help_: str, extra: list[Callable[..., Any]] | None = None) -> None:
    def command(
        tenant: str, object_keys: tuple[str, ...], api_url: str | None, actor: str | None, as_json: bool, **kw: Any
    ) -> None:
        client = _client(api_url, actor)
        out = _bulk(client, path, list(object_keys), {"tenant_id": tenant, **kw}, as_json)
        emit(out, as_json=as_json, title=name)
        if out.get("errors"):
            raise SystemExit(1)

    command.__doc__ = help_
    cmd: Any = command
    for opt in extra or []:
        cmd = opt(cmd)
    cmd = json_option(api_options(cmd))
    cmd = click.argument("object_keys", nargs=-1, required=True)(cmd)
    cmd = click.option("--tenant", required=True, help="The tenant.")(cmd)
    failures.command(name)(cmd)


@failures.command("retry")
@click.option("--tenant", help="The tenant (required with OBJECT_KEYS).")
@click.argument("object_keys", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every failure matching the filters.")
@click.option("--kind", help="With --all: only this failure kind.")
@click.option("--object-kind", help="With --all: only this object kind.")
@click.option("--reason", help="Why (audit log).")
@api_options
@json_option
def failures_retry(
    tenant: str | None,
    object_keys: tuple[str, ...],
    all_: bool,
    kind: str | None,
    object_kind: str | None,
    reason: str | None,
    api_url: str | None,
    actor: str | None,
    as_json: bool,
) -> None:
    """Send failed objects through the normal (exactly-once) sync path again."""
    client = _client(api_url, actor)
    if object_keys:
        out = _bulk(client, "/ops/failures/retry", list(object_keys), {"tenant_id": tenant, "reason": reason}, as_json)
    elif all_:
        body = {"tenant_id": tenant, "all": True, "kind": kind, "object_kind": object_kind, "reason": reason}
        out = client.call("POST", "/ops/failures/retry", body=body)
    else:
        raise click.UsageError("give OBJECT_KEYS or --all")
    emit(out, as_json=as_json, title=f"{len(out.get('retried', []))} retried")


_keys_command(
    "exclude",
    "/ops/failures/exclude",
    "Exclude objects from sync (out of the failure list), with a reason.",
    [click.option("--reason", required=True, help="Why (audit log).")],
)
_keys_command(
    "manual",
    "/ops/failures/manual",
    "Mark objects for manual entry in QuickBooks (they join the to-do list).",
    [click.option("--note", help="Note for whoever enters them.")],
)
_keys_command(
    "done",
    "/ops/failures/manual-done",
    "Mark manual entries as done.",
    [click.option("--note", help="Note (audit log).")],
)


@failures.command("todo")
@click.option("--tenant", help="Only this tenant.")
@api_options
@json_option
def failures_todo(tenant: str | None, api_url: str | None, actor: str | None, as_json: bool) -> None:
    """The manual-entry to-do list."""
    out = _client(api_url, actor).call("GET", "/ops/manual", query={"tenant": tenant})
    emit(out if as_json else out["items"], as_json=as_json, columns=(*FAILURE_COLUMNS[:2], "reason", "updated_at"))


@failures.command("audit")
@click.option("--tenant", help="The tenant (omit for DLQ actions without one).")
@click.option("--limit", default=50, show_default=True)
@api_options
@json_option
def failures_audit(tenant: str | None, limit: int, api_url: str | None, actor: str | None, as_json: bool) -> None:
    """Who did what, newest first."""
    out = _client(api_url, actor).call("GET", "/ops/audit", query={"tenant": tenant, "limit": limit})
    emit(out if as_json else out["items"], as_json=as_json, columns=("at", "actor", "action", "target", "detail"))


# ====================================================================== dlq
@click.group()
def dlq() -> None:
    """Dead letters: list, show, redrive (through the normal path), delete."""


@dlq.command("list")
@click.option("--tenant", help="Only this tenant's messages.")
@api_options
@json_option
def dlq_list(tenant: str | None, api_url: str | None, actor: str | None, as_json: bool) -> None:
    """List dead letters (they stay in the queue)."""
    out = _client(api_url, actor).call("GET", "/ops/dlq", query={"tenant": tenant})
    if as_json:
        emit(out, as_json=True)
        return
    cols = ("message_id", "type", "sent_at", "tenant_id", "object_key", "error")
    emit(out["items"], as_json=False, columns=cols, title=f"dead letters (depth {out['depth']})")


@dlq.command("show")
@click.argument("message_id")
@api_options
@json_option
def dlq_show(message_id: str, api_url: str | None, actor: str | None, as_json: bool) -> None:
    """One dead letter, in full (payload PHI-free)."""
    emit(_client(api_url, actor).call("GET", f"/ops/dlq/{seg(message_id)}"), as_json=as_json)


@dlq.command("redrive")
@click.argument("message_ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every message in the queue.")
@click.option("--keep", is_flag=True, help="Keep the messages after a successful redrive.")
@api_options
@json_option
def dlq_redrive(
    message_ids: tuple[str, ...], all_: bool, keep: bool, api_url: str | None, actor: str | None, as_json: bool
) -> None:
    """Redrive dead letters through the normal sync path (never a direct QBO write); delete them after."""
    if not message_ids and not all_:
        raise click.UsageError("give MESSAGE_IDS or --all")
    client = _client(api_url, actor)
    body: dict[str, Any] = {"delete": not keep}
    body.update({"all": True} if all_ and not message_ids else {"message_ids": list(message_ids)})
    out = client.call("POST", "/ops/dlq/redrive", body=body)
    if as_json:
        emit(out, as_json=True)
        return
    rows = [{"message_id": k, **v} for k, v in out["results"].items()]
    emit(rows, as_json=False, title=f"{out['redriven']} redriven")


@dlq.command("delete")
@click.argument("message_ids", nargs=-1, required=True)
@api_options
@json_option
def dlq_delete(message_ids: tuple[str, ...], api_url: str | None, actor: str | None, as_json: bool) -> None:
    """Delete dead letters (after review)."""
    client = _client(api_url, actor)
    results = [client.call("DELETE", f"/ops/dlq/{seg(m)}") for m in message_ids]
    emit(results, as_json=as_json)


# ====================================================================== status / connections
@click.command("status")
@click.argument("tenant")
@click.option("--object-key", help="e.g. appointment:appt-123")
@click.option("--event-id", "event_ids", multiple=True, help="Booking event id (repeatable).")
@api_options
@json_option
def status(
    tenant: str,
    object_key: str | None,
    event_ids: tuple[str, ...],
    api_url: str | None,
    actor: str | None,
    as_json: bool,
) -> None:
    """Sync status of source objects: booking event ids → object → QuickBooks ids and states."""
    query = {"object_key": object_key, "event_ids": ",".join(event_ids)}
    out = _client(api_url, actor).call("GET", f"/ops/status/{seg(tenant)}", query=query)
    if as_json:
        emit(out, as_json=True)
        return
    for obj in out["objects"]:
        emit({k: v for k, v in obj.items() if k != "timeline"}, as_json=False, title=obj["object_key"])
        if obj.get("timeline"):
            emit(obj["timeline"], as_json=False, title="events")


@click.command("connections")
@api_options
@json_option
def connections(api_url: str | None, actor: str | None, as_json: bool) -> None:
    """Connection health per QuickBooks company: status, hard-expiry date, last sync, throttling, held work, and
    the objects waiting in the company's queue (held back while other companies had work)."""
    out = _client(api_url, actor).call("GET", "/ops/connections")
    cols = ("realm_id", "company_name", "status", "refresh_hard_expires_on", "last_sync_at", "throttled_at")
    extra = ("held_objects", "queued_objects", "queue_moved_at", "warnings")
    emit(out if as_json else out["items"], as_json=as_json, columns=(*cols, *extra))


# ====================================================================== mappings
@click.group()
def mappings() -> None:
    """Mappings of service codes, providers, locations, tax codes, payment methods to QuickBooks lists."""


@mappings.command("show")
@click.argument("tenant")
@api_options
@json_option
def mappings_show(tenant: str, api_url: str | None, actor: str | None, as_json: bool) -> None:
    """A tenant's mappings."""
    emit(_client(api_url, actor).call("GET", f"/ops/mappings/{seg(tenant)}"), as_json=as_json)


@mappings.command("set")
@click.argument("tenant")
@click.argument("section")
@click.argument("pairs", nargs=-1, required=True, metavar="CODE=QBO_NAME...")
@click.option("--repost", is_flag=True, help="Also update documents already posted with the old mapping.")
@click.option("--no-retry", is_flag=True, help="Do not re-drive failures that lacked this mapping.")
@click.option("--no-validate", is_flag=True, help="Skip the check against QuickBooks' lists.")
@api_options
@json_option
def mappings_set(
    tenant: str,
    section: str,
    pairs: tuple[str, ...],
    repost: bool,
    no_retry: bool,
    no_validate: bool,
    api_url: str | None,
    actor: str | None,
    as_json: bool,
) -> None:
    """Set mappings: ``qbsync mappings set clinic-1 services 97110="Therapeutic Exercise"``.

    \b
    SECTION: services (code or code|payer_type|modality), providers, locations, tax_codes, payment_methods,
    or deposit_account (give just the account: qbsync mappings set clinic-1 deposit_account Checking).
    """
    changes: dict[str, Any] = {}
    for pair in pairs:
        code, sep, value = pair.partition("=")
        if section == "deposit_account" and not sep:
            changes["deposit_account"] = pair
            continue
        if not sep or not code:
            raise click.BadParameter(f"'{pair}' is not CODE=QBO_NAME", param_hint="PAIRS")
        changes[f"{section}.{code}"] = value
    body = {"changes": changes, "repost": repost, "retry": not no_retry, "validate": not no_validate}
    out = _client(api_url, actor).call("PUT", f"/ops/mappings/{seg(tenant)}", body=body)
    emit(out, as_json=as_json, title="mappings updated")


@mappings.command("validate")
@click.argument("tenant")
@api_options
@json_option
def mappings_validate(tenant: str, api_url: str | None, actor: str | None, as_json: bool) -> None:
    """Check every mapping against the QuickBooks company's current lists (reloaded first)."""
    out = _client(api_url, actor).call("GET", f"/ops/mappings/{seg(tenant)}/validate")
    emit(out if as_json else (out["problems"] or {"ok": True, "checked": out["checked"]}), as_json=as_json)
    if not out["ok"]:
        raise SystemExit(1)


@mappings.command("unmapped")
@click.argument("tenant")
@api_options
@json_option
def mappings_unmapped(tenant: str, api_url: str | None, actor: str | None, as_json: bool) -> None:
    """Codes seen in the tenant's events that have no mapping (with how many objects use them)."""
    out = _client(api_url, actor).call("GET", f"/ops/mappings/{seg(tenant)}/unmapped")
    if as_json:
        emit(out, as_json=True)
        return
    rows = [{"section": s, "code": c, "objects": n} for s, codes in out["unmapped"].items() for c, n in codes.items()]
    emit(rows, as_json=False, title="unmapped")


@mappings.command("refresh")
@click.argument("tenant")
@api_options
@json_option
def mappings_refresh(tenant: str, api_url: str | None, actor: str | None, as_json: bool) -> None:
    """Reload the QuickBooks lists cache (after adding items / classes / locations in QuickBooks)."""
    emit(_client(api_url, actor).call("POST", f"/ops/mappings/{seg(tenant)}/refresh"), as_json=as_json)


# ====================================================================== customers
@click.group()
def customers() -> None:
    """Customer matching: pair platform patients with existing QuickBooks customers."""


@customers.command("suggest")
@click.argument("tenant")
@click.option("--min-score", default=0.6, show_default=True)
@api_options
@json_option
def customers_suggest(tenant: str, min_score: float, api_url: str | None, actor: str | None, as_json: bool) -> None:
    """Suggested matches with scores; ambiguous ones are flagged (never auto-accepted)."""
    out = _client(api_url, actor).call(
        "GET", f"/ops/customers/{seg(tenant)}/suggestions", query={"min_score": min_score}
    )
    if as_json:
        emit(out, as_json=True)
        return
    rows = [
        {
            "patient_id": s["patient_id"],
            "patient": " ".join(p for p in (s["patient"].get("first_name"), s["patient"].get("last_name")) if p),
            "customer_id": s["best"]["customer_id"],
            "customer": s["best"]["display_name"],
            "score": s["best"]["score"],
            "ambiguous": s["ambiguous"],
            "auto": s["auto_acceptable"],
        }
        for s in out["items"]
    ]
    emit(rows, as_json=False, title=f"suggestions (auto-accept threshold {out['threshold']})")


@customers.command("accept")
@click.argument("tenant")
@click.argument("patient_id")
@click.option("--customer-id", help="One of the suggested customers (default: the best).")
@api_options
@json_option
def customers_accept(
    tenant: str, patient_id: str, customer_id: str | None, api_url: str | None, actor: str | None, as_json: bool
) -> None:
    """Accept a suggested match: the patient's invoices go to that customer."""
    body = {"patient_id": patient_id, "customer_id": customer_id}
    emit(_client(api_url, actor).call("POST", f"/ops/customers/{seg(tenant)}/accept", body=body), as_json=as_json)


@customers.command("link")
@click.argument("tenant")
@click.argument("patient_id")
@click.argument("customer_id")
@api_options
@json_option
def customers_link(
    tenant: str, patient_id: str, customer_id: str, api_url: str | None, actor: str | None, as_json: bool
) -> None:
    """Override: link the patient to any QuickBooks customer id."""
    body = {"patient_id": patient_id, "customer_id": customer_id}
    emit(_client(api_url, actor).call("POST", f"/ops/customers/{seg(tenant)}/link", body=body), as_json=as_json)


@customers.command("create")
@click.argument("tenant")
@click.argument("patient_id")
@api_options
@json_option
def customers_create(tenant: str, patient_id: str, api_url: str | None, actor: str | None, as_json: bool) -> None:
    """No existing customer fits: let qbsync create one (named by the tenant's naming policy)."""
    body = {"patient_id": patient_id}
    emit(_client(api_url, actor).call("POST", f"/ops/customers/{seg(tenant)}/create", body=body), as_json=as_json)


@customers.command("auto-accept")
@click.argument("tenant")
@click.option("--threshold", type=float, help="Default: the tenant's matching.auto_accept_threshold.")
@click.option("--dry-run", is_flag=True, help="Show what would be accepted.")
@api_options
@json_option
def customers_auto_accept(
    tenant: str, threshold: float | None, dry_run: bool, api_url: str | None, actor: str | None, as_json: bool
) -> None:
    """Accept every unambiguous match at or above the threshold (ambiguous ones are left for a person)."""
    body = {"threshold": threshold, "dry_run": dry_run}
    out = _client(api_url, actor).call("POST", f"/ops/customers/{seg(tenant)}/auto-accept", body=body)
    if as_json:
        emit(out, as_json=True)
        return
    emit(out["accepted"], as_json=False, title=f"accepted ({'dry run' if dry_run else 'linked'})")
    emit({"ambiguous": len(out["ambiguous"]), "below_threshold": len(out["below_threshold"])}, as_json=False)
