"""``qbsync reports revenue|visits|deposits|drift``: revenue and reconciliation reports for a tenant and period.

``--verify`` reads the QBO company back (one paged query per entity) and lists every difference; ``--json``
prints the report, ``--csv FILE`` writes it flat, ``--chart FILE.png`` draws the revenue report.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from shared.cli.tenants import _errors_as_click


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fields: dict[str, None] = {}
    for r in rows:
        fields.update(dict.fromkeys(r))
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(fields))
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in r.items()})
    return out


def _options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(
        [
            click.option("--tenant", required=True, help="Tenant id."),
            click.option("--from", "start", required=True, help="First day (YYYY-MM-DD)."),
            click.option("--to", "end", required=True, help="Last day, inclusive (YYYY-MM-DD)."),
            click.option("--verify", is_flag=True, help="Read QuickBooks back and list every difference."),
            click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON."),
            click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write the report as CSV."),
        ]
    ):
        fn = opt(fn)
    return fn


def _run(kind: str, tenant: str, start: str, end: str, verify: bool) -> dict[str, Any]:
    from shared.services.reports import ReportService, parse_period

    return ReportService().report(kind, tenant, parse_period(start, end), verify=verify)


def _finish(kind: str, data: dict[str, Any], as_json: bool, csv_path: str | None, printer: Callable[..., None]) -> None:
    from shared.services.reports import csv_rows

    if csv_path:
        write_csv(csv_rows(kind, data), csv_path)
    if as_json:
        click.echo(json.dumps(data, default=str))
    else:
        from rich.console import Console

        console = Console(file=sys.stdout)
        printer(data, console)
        if csv_path:
            console.print(f"CSV: {csv_path}")


@click.group()
def reports() -> None:
    """Revenue and reconciliation reports from the ledger (and, with --verify, from QuickBooks)."""


@reports.command("revenue")
@_options
@click.option("--chart", "chart_path", type=click.Path(dir_okay=False), help="Also draw the report as a PNG.")
@_errors_as_click
def revenue(
    tenant: str, start: str, end: str, verify: bool, as_json: bool, csv_path: str | None, chart_path: str | None
) -> None:
    """Invoiced, collected and outstanding by provider, location, service, payer type and modality."""
    data = _run("revenue", tenant, start, end, verify)
    if chart_path:
        from shared.reports.chart import revenue_chart

        revenue_chart(data, chart_path, title=f"Revenue of {tenant}")
    _finish("revenue", data, as_json, csv_path, print_revenue)
    if chart_path and not as_json:
        click.echo(f"Chart: {chart_path}")


@reports.command("visits")
@_options
@_errors_as_click
def visits(tenant: str, start: str, end: str, verify: bool, as_json: bool, csv_path: str | None) -> None:
    """Per visit: copay, insurer reimbursement, adjustments, write-offs, balance; the ones that do not add up."""
    _finish("visits", _run("visits", tenant, start, end, verify), as_json, csv_path, print_visits)


@reports.command("deposits")
@_options
@_errors_as_click
def deposits(tenant: str, start: str, end: str, verify: bool, as_json: bool, csv_path: str | None) -> None:
    """Payments in Undeposited Funds vs the platform's deposit batches."""
    _finish("deposits", _run("deposits", tenant, start, end, verify), as_json, csv_path, print_deposits)


@reports.command("drift")
@_options
@_errors_as_click
def drift(tenant: str, start: str, end: str, verify: bool, as_json: bool, csv_path: str | None) -> None:
    """Documents that differ between the ledger and QuickBooks, with the suggested action."""
    _finish("drift", _run("drift", tenant, start, end, verify), as_json, csv_path, print_drift)


# ---------------------------------------------------------------------------------------------- people's view
def _table(title: str, columns: list[str], rows: list[list[Any]]) -> Any:
    from rich.table import Table

    t = Table(title=title)
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    return t


FIGURES = ["visits", "invoiced", "collected", "adjusted", "written_off", "outstanding"]


def print_revenue(data: dict[str, Any], console: Any) -> None:
    p, t = data["period"], data["totals"]
    console.print(
        f"[bold]Revenue {p['from']} to {p['to']}[/bold]: {t['visits']} visits, invoiced {t['invoiced']}, "
        f"collected {t['collected']}, adjusted {t['adjusted']}, written off {t['written_off']}, "
        f"outstanding {t['outstanding']}; unapplied {t['unapplied']}, refunded {t['refunded']}"
    )
    for dim, rows in data["by"].items():
        cols = [c for c in FIGURES if any(c in f for f in rows.values())]
        console.print(
            _table(
                f"by {dim.replace('_', ' ')}", [dim, *cols], [[k, *(f.get(c) for c in cols)] for k, f in rows.items()]
            )
        )
    for i in data["not_invoiced"]:
        console.print(f"[yellow]not invoiced[/yellow] {i['subject']}: {i['reason']}")
    _print_verify(data.get("verify"), console)


def _print_verify(v: dict[str, Any] | None, console: Any) -> None:
    if v is None:
        return
    q = v["qbo_totals"]
    console.print(
        f"[bold]QuickBooks[/bold] ({v['qbo_reads']} reads): {q['invoices']} invoices, invoiced {q['invoiced']}, "
        f"outstanding {q['outstanding']}"
    )
    if v["matches"]:
        console.print("[green]the ledger and QuickBooks agree[/green]")
        return
    console.print(
        _table(
            f"{len(v['differences'])} differences",
            ["document", "field", "ledger", "QuickBooks"],
            [[d["document"], d["field"], d["ledger"], d["qbo"]] for d in v["differences"]],
        )
    )


def print_visits(data: dict[str, Any], console: Any) -> None:
    t = data["totals"]
    console.print(
        f"[bold]Visits {data['period']['from']} to {data['period']['to']}[/bold]: {t['visits']} visits, charges "
        f"{t['charges']} = copays {t['copay']} + patient {t['patient_paid']} + insurer {t['insurer_paid']} + "
        f"adjustments {t['adjustments']} + write-offs {t['write_offs']} + credits {t['credits']} + "
        f"balance {t['balance']}"
    )
    if not data["issues"]:
        console.print("[green]every visit adds up[/green]")
        return
    console.print(
        _table(
            "Does not add up",
            ["subject", "reason", "amount"],
            [[i["subject"], i["reason"], i["amount"]] for i in data["issues"]],
        )
    )


def print_deposits(data: dict[str, Any], console: Any) -> None:
    console.print(
        _table(
            f"Deposit batches {data['period']['from']} to {data['period']['to']}",
            ["batch", "payments", "platform", "QuickBooks", "difference"],
            [
                [b["batch"], len(b["payments"]), b["platform_total"], b["qbo_total"], b["difference"]]
                for b in data["batches"]
            ],
        )
    )
    for i in data["issues"]:
        console.print(f"[yellow]{i['subject']}[/yellow]: {i['reason']}" + (f" ({i['amount']})" if i["amount"] else ""))
    if not data["issues"]:
        console.print("[green]every batch matches its QuickBooks payments[/green]")


def print_drift(data: dict[str, Any], console: Any) -> None:
    if data.get("note"):
        console.print(data["note"])
    if not data["drift"]:
        console.print(f"[green]no drift[/green] (source: {data['source']})")
        return
    console.print(
        _table(
            f"Drift (source: {data['source']})",
            ["document", "kind", "action"],
            [[e["document"], e["kind"], e["action"]] for e in data["drift"]],
        )
    )
