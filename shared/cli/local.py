"""``qbsync local up``: the whole system on this machine (local AWS stack + QBO emulator)."""

from __future__ import annotations

import json
import signal
import threading

import click

from shared.cli.output import json_option


@click.group()
def local() -> None:
    """Run qbsync locally: template.yaml's wiring on emulated AWS, with the QBO emulator beside it."""


@local.command("up")
@click.option("--no-ddb-local", is_flag=True, help="Use moto for DynamoDB instead of DynamoDB Local (Java).")
@click.option("--schedule-interval", type=float, default=None, help="Fire every schedule every N seconds.")
@click.option("--webhook-format", type=click.Choice(["cloudevents", "legacy"]), default="cloudevents")
@json_option
def up(no_ddb_local: bool, schedule_interval: float | None, webhook_format: str, as_json: bool) -> None:
    """Start everything in the foreground; Ctrl-C stops it and leaves no process behind."""
    from infra.local.system import LocalSystem

    system = LocalSystem(
        use_ddb_local=not no_ddb_local,
        schedule_interval_override_s=schedule_interval,
        webhook_format=webhook_format,
    )
    try:
        system.start()
        if as_json:
            click.echo(json.dumps(system.urls))
        else:
            click.echo("qbsync local stack is up (Ctrl-C stops it):")
            for name, url in system.urls.items():
                click.echo(f"  {name:12} {url}")
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the cleanup
        system.stop()
