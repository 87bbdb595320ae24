"""``qbsync``: the command line for admins and ops. Every command has ``--help`` and ``--json``.

Sub-commands live in their own modules and are imported only when used (fast ``--help``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any

import click

# command name -> "module:attribute" (a click command or group)
COMMANDS: dict[str, str] = {
    "tenants": "shared.cli.tenants:tenants",
    "emulator": "shared.cli.emulator:emulator",
    "local": "shared.cli.local:local",
    "demo": "shared.cli.demo:demo",
    "reports": "shared.cli.reports:reports",
    "failures": "shared.cli.ops:failures",
    "dlq": "shared.cli.ops:dlq",
    "status": "shared.cli.ops:status",
    "connections": "shared.cli.ops:connections",
    "mappings": "shared.cli.ops:mappings",
    "customers": "shared.cli.ops:customers",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, t in COMMANDS.items() if importlib.util.find_spec(t.split(":")[0]) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            cmd: Any = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:  # a command whose module is not written yet
            raise click.ClickException(f"'{cmd_name}' is not available: {exc}") from exc
        return cmd  # type: ignore[no-any-return]


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="qbsync")
def cli() -> None:
    """qbsync: the booking platform's money in QuickBooks Online, exactly once, without PHI."""
    # A command-line process is not a Lambda: CloudWatch EMF lines would only pollute stdout (and --json).
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")


def main() -> None:
    cli()
