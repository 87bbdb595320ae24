"""``qbsync demo``: the whole system on this machine, replaying a physical-therapy week."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from shared.cli.output import json_option


@click.command()
@click.option("--appointments", default=200, show_default=True, help="Appointments in the replayed week.")
@click.option("--patients", default=40, show_default=True, help="Distinct patients.")
@click.option("--serve", is_flag=True, help="Keep the stack running afterwards and print its URLs.")
@click.option("--no-ddb-local", is_flag=True, help="Use moto for DynamoDB instead of DynamoDB Local (Java).")
@click.option("--out", default="demo-output", show_default=True, type=click.Path(), help="Where the report goes.")
@json_option
def demo(appointments: int, patients: int, serve: bool, no_ddb_local: bool, out: str, as_json: bool) -> None:
    """Start the local stack + QBO emulator, onboard a clinic through the real OAuth routes, replay a week of
    bookings (duplicates and out-of-order deliveries included) and show the books. Exits 0 only if every
    accepted event is accounted for."""
    import threading

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from infra.demo.run import run_scenario, write_report
    from infra.demo.scenario import pt_week
    from infra.local.system import LocalSystem

    console = Console(stderr=True)
    scenario = pt_week(
        "demo-clinic",
        appointments=appointments,
        patients=patients,
        seed=42,
        cancel_rate=0.06,
        no_show_rate=0.04,
        copays=True,  # remittances, write-offs and refunds run in `make soak` (and its short test)
    )
    # Sweeps every 20 s (not every 15 min / 1 min as deployed) so retries and CDC show up within the demo.
    system = LocalSystem(use_ddb_local=not no_ddb_local, schedule_interval_override_s=20.0, quiet=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        disable=as_json,
        transient=True,
    ) as bar:
        task = bar.add_task("starting the local stack and QBO emulator", total=1)
        system.start()
        bar.update(task, completed=1)

        def progress(label: str, done: int, total: int) -> None:
            bar.update(task, description=label, completed=done, total=total)

        try:
            result = run_scenario(system, scenario, progress=progress)
        except BaseException:
            system.stop()
            raise
    report = write_report(result, Path(out))
    if as_json:
        click.echo(json.dumps(result.to_json()))
    else:
        _print_summary(result.to_json(), scenario.total, report, console=Console())
    try:
        _write_revenue(result.tenant_id, scenario.events, Path(out), as_json=as_json)
    except Exception as exc:  # a report that cannot be drawn must not leave the stack running
        click.echo(f"revenue report not written: {exc!r}", err=True)
    if serve:
        click.echo(json.dumps(system.urls) if as_json else _serve_text(system.urls))
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    system.stop()
    sys.exit(0 if result.ok else 1)


def _print_summary(r: dict[str, Any], expected_total: Any, report: Path, *, console: Any) -> None:
    from rich.table import Table

    console.print(
        f"[bold]qbsync demo[/bold]: {r['events_sent']} deliveries ({r['duplicates_sent']} duplicates), "
        f"{r['events_accepted']} events accepted, {r['seconds']} s"
    )
    t = Table(title="Source objects by outcome")
    t.add_column("status")
    t.add_column("objects", justify="right")
    for status, n in sorted(r["objects_by_status"].items()):
        t.add_row(status, str(n))
    console.print(t)
    if r["reasons"]:
        t = Table(title="Why not synced")
        t.add_column("reason")
        t.add_column("objects", justify="right")
        for reason, n in r["reasons"].items():
            t.add_row(reason, str(n))
        console.print(t)
    synced = r["books_as_synced"]
    console.print(
        f"[bold]As qbsync synced them[/bold]: {synced['invoices']} invoices, invoiced {synced['invoiced_total']} "
        f"(the platform says {expected_total})"
    )
    changes, callbacks = r["qbo_side_changes"], r["platform_callbacks"]
    if changes:
        console.print(
            f"[bold]A bookkeeper then edited invoice {changes['edited']} and deleted {changes['deleted']} in "
            f"QuickBooks[/bold]; the platform received signed callbacks: "
            + (", ".join(f"{t} x{n}" for t, n in sorted(callbacks.items())) or "none")
        )
    b = r["books"]
    console.print(
        f"[bold]The books in QuickBooks now[/bold]: {b['invoices']} invoices, {b['customers']} customers, "
        f"{b['payments']} payments, {b['credit_memos']} credit memos; invoiced {b['invoiced_total']}, "
        f"open balance {b['open_balance']}"
    )
    for dim, rows in b["revenue"].items():
        t = Table(title=f"Revenue by {dim.replace('_', ' ')}")
        t.add_column(dim)
        t.add_column("amount", justify="right")
        for name, amount in rows.items():
            t.add_row(name, amount)
        console.print(t)
    verdict = (
        "[green]every accepted event is accounted for[/green]"
        if r["ok"]
        else (f"[red]{len(r['unaccounted'])} events unaccounted for[/red]")
    )
    console.print(verdict)
    console.print(f"Report: {report}")
    console.print(
        "Next: `make demo ARGS=--serve` keeps the stack up; `qbsync local up` starts it empty; "
        "`qbsync tenants list` shows tenants (with AWS_ENDPOINT_URL from `qbsync local up --json`)."
    )


def _serve_text(urls: dict[str, Any]) -> str:
    lines = ["stack still running (Ctrl-C stops it):"] + [f"  {k:12} {v}" for k, v in urls.items()]
    return "\n".join(lines)


def _write_revenue(tenant_id: str, events: list[dict[str, Any]], out: Path, *, as_json: bool) -> None:
    """The week's revenue report, verified against the emulated QuickBooks company: revenue.json, revenue.csv
    and revenue.png in ``out``; their paths are printed."""
    from shared.cli.reports import write_csv
    from shared.reports.chart import revenue_chart
    from shared.services.reports import ReportService, csv_rows, parse_period

    days = sorted(str(e["data"]["service_date"]) for e in events if e["data"].get("service_date"))
    period = parse_period(days[0], days[-1])
    try:
        data = ReportService().revenue(tenant_id, period, verify=True).to_json()
    except Exception as exc:  # the demo still shows the ledger's figures if QuickBooks cannot be read
        click.echo(f"revenue report: QuickBooks read-back failed ({exc}); the ledger's figures only", err=True)
        data = ReportService().revenue(tenant_id, period).to_json()
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "revenue.json", "csv": out / "revenue.csv", "chart": out / "revenue.png"}
    paths["json"].write_text(json.dumps(data, indent=2))
    write_csv(csv_rows("revenue", data), paths["csv"])
    revenue_chart(data, paths["chart"], title="Riverside Physical Therapy revenue")
    t, v = data["totals"], data.get("verify")
    check = (
        "" if v is None else f"; QuickBooks {'agrees' if v['matches'] else 'differs: ' + str(len(v['differences']))}"
    )
    line = (
        f"Revenue {period.start} to {period.end}: invoiced {t['invoiced']}, collected {t['collected']}, "
        f"outstanding {t['outstanding']}{check}. Written: {paths['json']}, {paths['csv']}, {paths['chart']}"
    )
    click.echo(line, err=as_json)  # stdout stays one JSON document with --json
