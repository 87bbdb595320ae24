"""``qbsync tenants``: create tenants, show them, rotate their signing secret, change their settings.

Talks to AWS with boto3 (``AWS_ENDPOINT_URL`` points it at the local stack); needs ``LEDGER_TABLE``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from shared.cli.output import emit, json_option

F = TypeVar("F", bound=Callable[..., Any])
_LIST_COLUMNS = ("tenant_id", "name", "status", "realm_id", "callback_url", "created_at")


def _errors_as_click(fn: F) -> F:
    """qbsync errors and missing settings become one clear line (exit code 1), not a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from shared.config import SettingsError
        from shared.domain.errors import QbsyncError

        try:
            return fn(*args, **kwargs)
        except QbsyncError as exc:
            field = exc.details.get("field")
            raise click.ClickException(f"{exc.message}" + (f" (field: {field})" if field else "")) from exc
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


@click.group()
def tenants() -> None:
    """Tenants: one practice each, with its signing secret, QBO link, settings and mappings."""


@tenants.command("create")
@click.option("--tenant-id", required=True, help="Stable id the platform sends in X-Qbsync-Tenant.")
@click.option("--name", required=True, help="Display name of the practice.")
@click.option("--callback-url", default=None, help="Where signed callbacks are POSTed (optional).")
@json_option
@_errors_as_click
def create(tenant_id: str, name: str, callback_url: str | None, as_json: bool) -> None:
    """Create a tenant and its signing secret. The secret is printed once: store it in the platform."""
    from shared.services.tenants import create_tenant

    created = create_tenant(tenant_id, name, callback_url=callback_url)
    out = {**created.tenant.summary(), "signing_secret": created.signing_secret}
    emit(out, as_json=as_json, title=f"tenant {tenant_id} created (the signing secret is shown only now)")


@tenants.command("list")
@json_option
@_errors_as_click
def list_(as_json: bool) -> None:
    """List every tenant."""
    from shared.services.tenants import list_tenants

    rows = [t.summary() for t in list_tenants()]
    emit(rows if as_json else [{c: r.get(c) for c in _LIST_COLUMNS} for r in rows], as_json=as_json, title="tenants")


@tenants.command("show")
@click.argument("tenant_id")
@json_option
@_errors_as_click
def show(tenant_id: str, as_json: bool) -> None:
    """Show one tenant with its settings and mappings (never its secret)."""
    from shared.services.tenants import get_tenant

    emit(get_tenant(tenant_id).summary(), as_json=as_json, title=f"tenant {tenant_id}")


@tenants.command("rotate-secret")
@click.argument("tenant_id")
@json_option
@_errors_as_click
def rotate_secret(tenant_id: str, as_json: bool) -> None:
    """Make a new signing secret current; the old one stays valid (as previous) until the next rotation."""
    from shared.services.tenants import rotate_signing_secret

    rotated = rotate_signing_secret(tenant_id)
    out = {"tenant_id": tenant_id, "signing_secret": rotated.signing_secret, "previous_still_valid": True}
    emit(out, as_json=as_json, title="new signing secret (shown only now)")


@tenants.command("set")
@click.argument("tenant_id")
@click.argument("assignments", nargs=-1, metavar="KEY=VALUE...")
@click.option("--name", default=None, help="New display name.")
@click.option("--callback-url", default=None, help="New callback URL.")
@click.option("--clear-callback-url", is_flag=True, help="Remove the callback URL.")
@json_option
@_errors_as_click
def set_(
    tenant_id: str,
    assignments: tuple[str, ...],
    name: str | None,
    callback_url: str | None,
    clear_callback_url: bool,
    as_json: bool,
) -> None:
    """Change settings (or mappings) with KEY=VALUE pairs. Values are JSON when they parse as JSON.

    \b
    Examples:
      qbsync tenants set clinic-1 naming_policy=initials entities.payments=false
      qbsync tenants set clinic-1 matching.auto_accept_threshold=0.9 accounting_start_date=2026-01-01
      qbsync tenants set clinic-1 'mappings.services={"97110": "PT Therapeutic Exercise"}'
      qbsync tenants set clinic-1 doc_number_prefix='"07"'    # quote to force a string
    """
    from shared.services.tenants import parse_value, update_tenant

    changes: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{item}' is not KEY=VALUE", param_hint="KEY=VALUE")
        changes[key.strip()] = parse_value(raw)
    if not (changes or name or callback_url or clear_callback_url):
        raise click.UsageError("nothing to change: give KEY=VALUE pairs or an option")
    tenant = update_tenant(
        tenant_id, changes=changes, name=name, callback_url=callback_url, clear_callback_url=clear_callback_url
    )
    emit(tenant.summary(), as_json=as_json, title=f"tenant {tenant_id} updated")
