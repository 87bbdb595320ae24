"""``qbsync emulator``: the QuickBooks Online emulator on its own."""

from __future__ import annotations

import click


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def emulator(ctx: click.Context) -> None:
    """Run the QBO emulator (API v3, OAuth, webhooks, faults). Options: see `python -m infra.qbo_emulator -h`,
    e.g. `qbsync emulator --port 8765 --json`."""
    from infra.qbo_emulator.__main__ import main

    raise SystemExit(main(list(ctx.args)))
