"""Reports for a tenant and period: revenue, visit and deposit reconciliation, drift (use cases).

``ReportService`` loads the tenant's ledger rows (PHI-free desired state + the QBO documents qbsync wrote) and
hands them to the pure rules in ``shared.domain.reports``. With ``verify`` it reads the QBO company back
through the QBO client — one paged query per entity (Invoice, Payment, CreditMemo, and the Class, Department,
Item and Account lists for names) — and lists every difference. The number of QBO reads is reported.

These functions back ``qbsync reports ...`` and the ops API (``GET /ops/reports/{kind}``: ``report_for_api``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal, cast

from shared.adapters.dynamo import ObjectItem, bind_table
from shared.adapters.qbo.types import QboApi
from shared.adapters.refs import escape_query_value
from shared.adapters.tenants import TenantRepository
from shared.domain import reports as rep
from shared.domain.documents import money
from shared.domain.errors import BadRequest, NotFound
from shared.domain.tenant import Tenant

ReportKind = Literal["revenue", "visits", "deposits", "drift"]
KINDS: tuple[ReportKind, ...] = ("revenue", "visits", "deposits", "drift")
ClientFactory = Callable[[str], QboApi]
RowSource = Callable[[str], Iterable[rep.LedgerRow]]


def ledger_rows(tenant_id: str) -> Iterator[rep.LedgerRow]:
    """Every source object of a tenant. A filtered scan: the ledger has no per-tenant index of objects yet
    (a GSI ``TENANTOBJ#{tenant}`` would make this a query; reports are an ops operation, not a hot path)."""
    bind_table()
    cond = (ObjectItem.rtype == "object") & (ObjectItem.tenant_id == tenant_id)
    for o in cast(Iterator[ObjectItem], ObjectItem.scan(cond)):
        yield rep.LedgerRow(
            object_key=o.object_key,
            kind=o.kind,
            lifecycle=o.lifecycle or "active",
            status=o.status or "pending",
            desired=o.desired or {},
            qbo=o.qbo or {},
            status_reason=o.status_reason,
        )


def parse_period(start: str | date, end: str | date) -> rep.Period:
    """Raises BadRequest for a date that is not ISO (YYYY-MM-DD) or a range that ends before it starts."""
    try:
        s = start if isinstance(start, date) else date.fromisoformat(start)
        e = end if isinstance(end, date) else date.fromisoformat(end)
    except ValueError as exc:
        raise BadRequest(f"dates are YYYY-MM-DD: {exc}", field="from") from exc
    if e < s:
        raise BadRequest("'to' is before 'from'", field="to")
    return rep.Period(s, e)


@dataclass
class ReportService:
    client_factory: ClientFactory | None = None
    rows: RowSource = ledger_rows
    tenants: TenantRepository | None = None
    drift_store: Callable[[str], dict[str, Any] | None] | None = None

    # ------------------------------------------------------------------ loading
    def _tenant(self, tenant_id: str) -> Tenant:
        tenant = (self.tenants or TenantRepository()).get(tenant_id)
        if tenant is None:
            raise NotFound(f"unknown tenant {tenant_id}", field="tenant")
        return tenant

    def _ledger(self, tenant: Tenant) -> rep.Ledger:
        return rep.build_ledger(self.rows(tenant.tenant_id), tenant.mappings, tenant.settings)

    def _client(self, tenant: Tenant) -> QboApi:
        if not tenant.realm_id:
            raise BadRequest(f"tenant {tenant.tenant_id} is not connected to QuickBooks", field="verify")
        if self.client_factory is None:
            from shared.services.qbo_factory import default_client_factory

            self.client_factory = default_client_factory
        return self.client_factory(tenant.realm_id)

    # ------------------------------------------------------------------ QBO read-back
    def read_books(self, client: QboApi, period: rep.Period, since: date) -> rep.QboBooks:
        """One paged query per entity. Invoices of the period; payments and credit memos from ``since`` (money
        for a period's visits may arrive after it). Raises QboFault."""
        before = client.stats.reads
        start, end = escape_query_value(period.start.isoformat()), escape_query_value(period.end.isoformat())
        invoices = client.query(f"select * from Invoice where TxnDate >= '{start}' and TxnDate <= '{end}'")
        frm = escape_query_value(since.isoformat())
        payments = client.query(f"select * from Payment where TxnDate >= '{frm}'")
        memos = client.query(f"select * from CreditMemo where TxnDate >= '{frm}'")
        names: dict[str, dict[str, str]] = {}
        for entity in ("Class", "Department", "Item", "Account"):
            rows = client.query(f"select * from {entity}")
            names[entity] = {str(r["Id"]): str(r.get("Name") or r.get("FullyQualifiedName") or r["Id"]) for r in rows}
            if entity == "Account":
                names["UndepositedFunds"] = {
                    str(r["Id"]): str(r.get("Name")) for r in rows if r.get("AccountSubType") == "UndepositedFunds"
                }
        return rep.QboBooks(invoices, payments, memos, names, reads=client.stats.reads - before)

    def _since(self, led: rep.Ledger, period: rep.Period) -> date:
        """The earliest date of money that touches the period's visits (so the read-back covers it)."""
        keys = {v.key for v in rep.period_visits(led, period)}
        dates = [period.start]
        for r in led.rows.values():
            if r.kind in ("payment", "remittance", "credit") and rep._touches(r, keys, period):
                d = r.desired.get("received_on") or r.desired.get("issued_on")
                if d:
                    dates.append(date.fromisoformat(str(d)[:10]))
        return min(dates)

    # ------------------------------------------------------------------ reports
    def revenue(self, tenant_id: str, period: rep.Period, *, verify: bool = False) -> rep.RevenueReport:
        """Raises NotFound (tenant), BadRequest (not connected, with verify), QboFault (verify)."""
        tenant = self._tenant(tenant_id)
        led = self._ledger(tenant)
        report = rep.revenue_report(led, period)
        if verify:
            books = self.read_books(self._client(tenant), period, self._since(led, period))
            report.verify = rep.verify(led, report, books, tenant.mappings, period)
        return report

    def visits(self, tenant_id: str, period: rep.Period, *, verify: bool = False) -> dict[str, Any]:
        tenant = self._tenant(tenant_id)
        led = self._ledger(tenant)
        reads = None
        if verify:
            report = rep.revenue_report(led, period)
            books = self.read_books(self._client(tenant), period, self._since(led, period))
            rep.verify(led, report, books, tenant.mappings, period)  # sets each visit's QBO balance
            reads = books.reads
        out = rep.visit_reconciliation(led, period)
        if reads is not None:
            out["qbo_reads"] = reads
        return out

    def deposits(self, tenant_id: str, period: rep.Period, *, verify: bool = False) -> dict[str, Any]:
        tenant = self._tenant(tenant_id)
        led = self._ledger(tenant)
        if not verify:
            return rep.deposit_reconciliation(led, period)
        client = self._client(tenant)
        before = client.stats.reads
        frm = escape_query_value(period.start.isoformat())
        to = escape_query_value(period.end.isoformat())
        rows = client.query(f"select * from Payment where TxnDate >= '{frm}' and TxnDate <= '{to}'")
        accounts = client.query("select * from Account where AccountSubType = 'UndepositedFunds'")
        undeposited = str(accounts[0]["Id"]) if accounts else None
        payments = {
            str(r["Id"]): rep.QboPayment(
                id=str(r["Id"]),
                total=money(r.get("TotalAmt", 0)),
                txn_date=str(r.get("TxnDate", "")),
                deposit_account=rep._ref(r, "DepositToAccountRef"),
                voided=rep.voided(r),
            )
            for r in rows
        }
        out = rep.deposit_reconciliation(led, period, payments, undeposited)
        out["qbo_reads"] = client.stats.reads - before
        return out

    def drift(self, tenant_id: str, period: rep.Period, *, verify: bool = False) -> dict[str, Any]:
        """With ``verify``: computed now from the QBO read-back. Otherwise the CDC sweep's latest stored report
        for the tenant's realm (``shared.services.qbo_changes.CdcSweep``), filtered to this tenant."""
        tenant = self._tenant(tenant_id)
        out: dict[str, Any] = {"report": "drift", "period": period.to_json()}
        if verify:
            led = self._ledger(tenant)
            report = rep.revenue_report(led, period)
            books = self.read_books(self._client(tenant), period, self._since(led, period))
            v = rep.verify(led, report, books, tenant.mappings, period)
            return {**out, "source": "verify", "drift": rep.drift_from_differences(v.differences), "qbo_reads": v.reads}
        stored = self._stored_drift(tenant.realm_id) if tenant.realm_id else None
        if stored is None:
            return {**out, "source": "none", "drift": [], "note": "no CDC drift report stored yet; use --verify"}
        mine = {**stored, "drift": [e for e in stored.get("drift", []) if e.get("tenant_id") in (None, tenant_id)]}
        return {
            **out,
            "source": "cdc",
            "generated_at": stored.get("generated_at"),
            "window": {"since": stored.get("since"), "until": stored.get("until")},
            "drift": rep.drift_from_cdc(mine),
        }

    def _stored_drift(self, realm_id: str) -> dict[str, Any] | None:
        if self.drift_store is None:
            from shared.adapters.notices import OpsRecords

            return OpsRecords().drift(realm_id)
        return self.drift_store(realm_id)

    def report(self, kind: str, tenant_id: str, period: rep.Period, *, verify: bool = False) -> dict[str, Any]:
        """Any report as a JSON-compatible dict. Raises BadRequest for an unknown kind."""
        if kind == "revenue":
            return self.revenue(tenant_id, period, verify=verify).to_json()
        if kind == "visits":
            return self.visits(tenant_id, period, verify=verify)
        if kind == "deposits":
            return self.deposits(tenant_id, period, verify=verify)
        if kind == "drift":
            return self.drift(tenant_id, period, verify=verify)
        raise BadRequest(f"unknown report {kind}; one of {', '.join(KINDS)}", field="kind")


def report_for_api(kind: str, query: dict[str, str | None], service: ReportService | None = None) -> dict[str, Any]:
    """``GET /ops/reports/{kind}?tenant=T&from=D&to=D&verify=true``: the ops API's one call.

    Raises BadRequest (missing / bad parameter, unknown kind), NotFound (tenant), QboFault (verify).
    """
    tenant = query.get("tenant")
    if not tenant:
        raise BadRequest("tenant is required", field="tenant")
    if not query.get("from") or not query.get("to"):
        raise BadRequest("from and to are required (YYYY-MM-DD)", field="from")
    period = parse_period(str(query["from"]), str(query["to"]))
    verify = str(query.get("verify") or "").lower() in ("1", "true", "yes")
    return (service or ReportService()).report(kind, tenant, period, verify=verify)


def csv_rows(kind: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows for CSV output of a report's JSON."""
    if kind == "revenue":
        rows: list[dict[str, Any]] = [{"section": "totals", "dimension": "all", "key": "all", **data["totals"]}]
        for dim, figs in data["by"].items():
            rows += [{"section": "revenue", "dimension": dim, "key": k, **f} for k, f in figs.items()]
        if "verify" in data:
            rows += [{"section": "difference", **d} for d in data["verify"]["differences"]]
        return rows
    if kind == "visits":
        return [*data["visits"], *({"visit": i["subject"], "issue": i["reason"]} for i in data["issues"])]
    if kind == "deposits":
        rows = [
            {"batch": b["batch"], **p, "batch_platform_total": b["platform_total"], "batch_qbo_total": b["qbo_total"]}
            for b in data["batches"]
            for p in b["payments"]
        ]
        rows += [{"batch": "", **p} for p in data["no_batch"]]
        return rows + [{"batch": i["subject"], "issue": i["reason"], "amount": i["amount"]} for i in data["issues"]]
    if kind == "drift":
        return [
            {
                "document": e["document"],
                "kind": e["kind"],
                "field": f["field"],
                "ledger": f["ledger"],
                "qbo": f["qbo"],
                "action": e["action"],
            }
            for e in data["drift"]
            for f in e["fields"]
        ]
    raise BadRequest(f"no CSV layout for {kind}")
