"""The naive baseline: the same visits posted the way a typical integration does it, with the
``python-quickbooks`` package, one visit at a time — find-or-create the customer, look up the item, create the
invoice, create the payment — against the QBO emulator with Intuit's limits switched on.

The workload is the realm throughput benchmark's: visits of 400 patients whose QuickBooks customers exist (that
benchmark registers them before its clock starts), so each visit finds its customer: 4 calls, 2 of them metered
reads. The customers are made through the emulator's UI, outside the request budget and the clock.

It runs for a fixed wall-clock budget (QBO's per-minute limits make a full 2,000-visit run take ~16 minutes at
the baseline's rate) of whole minutes: the emulator admits 500 requests in any 60 s, and this one-at-a-time
client spends them in the first seconds of each minute, then sees 429s until the window slides, so a budget
of a minute and a half would hold two minutes' requests. Until session 17 the budget was 150 s and every visit
had a new patient: three minutes' requests (1,500) in 2.5 minutes overstated the rate by a fifth, and the
customer each visit created understated it by about as much. Reported: visits per minute, HTTP calls, writes
and metered reads per visit, admitted requests per minute (500 at most), and 429s.
"""

from __future__ import annotations

import os
import time
from decimal import Decimal
from typing import Any

from bench import Options, benchmark

PATIENTS = 400  # the realm throughput benchmark's


def _patient(patient_id: str) -> str:
    return f"Patient {patient_id}"


def _client(url: str, realm: str, client_id: str, secret: str) -> Any:
    from intuitlib.client import AuthClient
    from quickbooks import QuickBooks

    from infra.qbo_emulator.control import EmulatorControl

    tokens = EmulatorControl(url).issue_tokens(realm, client_id)
    auth = AuthClient(client_id, secret, "http://127.0.0.1/cb", environment=f"{url}/.well-known/openid_configuration")
    auth.access_token = tokens["access_token"]
    auth.refresh_token = tokens["refresh_token"]
    qb = QuickBooks(auth_client=auth, refresh_token=auth.refresh_token, company_id=realm, minorversion=75)
    qb.api_url_v3 = f"{url}/v3"  # python-quickbooks builds URLs from these; point them at the emulator
    qb.sandbox_api_url_v3 = f"{url}/v3"
    return qb


def post_visit_naively(qb: Any, visit: dict[str, Any], items: dict[str, str]) -> None:
    """find-or-create customer, find item, create invoice, create payment (4 calls; 5 for a new patient)."""
    from quickbooks.objects.customer import Customer
    from quickbooks.objects.detailline import SalesItemLine, SalesItemLineDetail
    from quickbooks.objects.invoice import Invoice
    from quickbooks.objects.item import Item
    from quickbooks.objects.payment import Payment, PaymentLine

    name = _patient(visit["patient_id"])
    found = Customer.filter(DisplayName=name, qb=qb)
    if found:
        customer = found[0]
    else:
        customer = Customer()
        customer.DisplayName = name
        customer.save(qb=qb)
    item = Item.filter(Name=items[visit["code"]], qb=qb)[0]
    line = SalesItemLine()
    line.Amount = float(visit["amount"])
    line.SalesItemLineDetail = SalesItemLineDetail()
    line.SalesItemLineDetail.ItemRef = item.to_ref()
    line.SalesItemLineDetail.Qty = 1
    line.SalesItemLineDetail.UnitPrice = float(visit["amount"])
    invoice = Invoice()
    invoice.CustomerRef = customer.to_ref()
    invoice.Line = [line]
    invoice.save(qb=qb)
    payment = Payment()
    payment.CustomerRef = customer.to_ref()
    payment.TotalAmt = float(visit["copay"])
    pline = PaymentLine()
    pline.Amount = float(visit["copay"])
    pline.LinkedTxn = [invoice.to_linked_txn()]
    payment.Line = [pline]
    payment.save(qb=qb)


@benchmark("naive_baseline", group="throughput", summary="python-quickbooks, one visit at a time, QBO limits on")
def naive_baseline(opts: Options) -> dict[str, Any]:
    from infra.demo.company import PT_ITEMS, setup_company
    from infra.local.system import EmulatorProcess

    os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
    budget_s = 60.0 if opts.quick else 180.0  # whole minutes of QBO's one-minute window
    server = EmulatorProcess().start()  # as for qbsync's runs: QuickBooks is not in the client's process
    try:
        control = server.control
        control.register_app("bench-app", "bench-secret", ["http://127.0.0.1/cb"])
        control.set_limits(enabled=True)
        realm = str(control.create_realm(company_name="Baseline PT")["realm_id"])
        setup_company(control, realm, classes=False, departments=False)
        for i in range(PATIENTS):
            control.ui(realm, "Customer", "create", {"DisplayName": _patient(f"p{i}")})
        qb = _client(server.url, realm, "bench-app", "bench-secret")
        before = control.stats(realm)
        started = time.monotonic()
        visits = 0
        errors = 0
        while time.monotonic() - started < budget_s:
            visit = {
                "patient_id": f"p{visits % PATIENTS}",
                "code": "97110",
                "amount": Decimal("85.00"),
                "copay": Decimal("25.00"),
            }
            try:
                post_visit_naively(qb, visit, PT_ITEMS)
                visits += 1
            except Exception:  # typically a 429: back off a second, then go on with the next visit
                errors += 1
                time.sleep(1.0)
        elapsed = time.monotonic() - started
        after = control.stats(realm)
    finally:
        server.stop()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in ("requests", "reads", "writes", "queries", "throttled")}
    per_visit = max(visits, 1)
    return {
        "visits": visits,
        "patients": PATIENTS,
        "seconds": round(elapsed, 1),
        "visits_per_min": round(visits / elapsed * 60, 1),
        "admitted_requests_per_min": round((delta["requests"] - delta["throttled"]) / elapsed * 60, 1),
        "http_calls_per_visit": round(delta["requests"] / per_visit, 2),
        "writes_per_visit": round(delta["writes"] / per_visit, 2),
        "metered_reads_per_visit": round((delta["reads"] + delta["queries"]) / per_visit, 2),
        "throttled_429": delta["throttled"],
        "failed_visits": errors,
    }


def versus(throughput: dict[str, Any]) -> dict[str, Any]:
    """The ratios qbsync ÷ baseline of one ``make bench`` (its throughput group), when both benchmarks ran:
    visits per minute (qbsync's sustained and end-to-end pairs against the baseline's visits), and HTTP calls and
    metered reads per visit."""
    base, ours = throughput.get("naive_baseline"), throughput.get("realm_throughput")
    if not base or not ours or not base.get("visits_per_min"):
        return {}
    rate = base["visits_per_min"]
    reads = base.get("metered_reads_per_visit") or 0
    return {
        "throughput_ratio_sustained": round(ours["pairs_per_min_sustained"] / rate, 2),
        "throughput_ratio_end_to_end": round(ours["pairs_per_min_end_to_end"] / rate, 2),
        "http_calls_per_visit_ratio": round(ours["http_calls_per_visit"] / base["http_calls_per_visit"], 4),
        "metered_reads_per_visit_ratio": round(ours["metered_reads_per_visit"] / reads, 4) if reads else None,
    }
