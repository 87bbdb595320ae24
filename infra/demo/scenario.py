"""A realistic physical-therapy week as booking-platform events (deterministic for a seed).

Used by ``make demo``, the end-to-end tests and the benchmarks. ``expected`` holds what the books must show.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.domain.events import MAX_REMITTANCE_ITEMS

PROVIDERS = ["prov-a", "prov-b", "prov-c"]
LOCATIONS = ["loc-1", "loc-2"]
SERVICES = {"97110": Decimal("85.00"), "97140": Decimal("78.50"), "97161": Decimal("150.00"), "97530": Decimal("92.25")}
FIRST = ["Ada", "Leo", "Mia", "Noah", "Ivy", "Omar", "Zoe", "Liam", "Emma", "Ravi", "Sara", "Tom"]
LAST = ["Lopez", "Nguyen", "Smith", "Okafor", "Brown", "Garcia", "Kim", "Patel", "Rossi", "Cohen"]


@dataclass
class Scenario:
    events: list[dict[str, Any]] = field(default_factory=list)
    invoiced: dict[str, Decimal] = field(default_factory=dict)  # appointment id -> expected invoice total
    by_provider: dict[str, Decimal] = field(default_factory=dict)
    by_location: dict[str, Decimal] = field(default_factory=dict)
    patients: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Money movements (only with copays= / remittances= / write_off= / refund=): what the books must show.
    copaid: dict[str, Decimal] = field(default_factory=dict)  # appointment id -> copay collected at booking
    remitted: dict[str, Decimal] = field(default_factory=dict)  # appointment id -> insurer payment
    paid: dict[str, Decimal] = field(default_factory=dict)  # appointment id -> patient payment after the visit
    adjusted: dict[str, Decimal] = field(default_factory=dict)  # appointment id -> contractual adjustment
    credited: dict[str, Decimal] = field(default_factory=dict)  # appointment id -> write-off / courtesy credit
    refunded: Decimal = Decimal(0)  # money given back (a RefundReceipt, or a reduced payment)
    payments: int = 0  # platform payments (one QBO Payment each)
    remittance_payments: int = 0  # QBO Payments for remittances (one per remittance and patient)
    credit_memos: int = 0  # QBO CreditMemos (contractual adjustments + credits), each with a zero-amount Payment

    @property
    def total(self) -> Decimal:
        return sum(self.invoiced.values(), Decimal(0))

    @property
    def received(self) -> Decimal:
        """Money in: copays, insurer payments and patient payments (before refunds)."""
        return sum((*self.copaid.values(), *self.remitted.values(), *self.paid.values()), Decimal(0))

    @property
    def credited_total(self) -> Decimal:
        return sum((*self.adjusted.values(), *self.credited.values()), Decimal(0))

    def balance(self, appointment_id: str) -> Decimal:
        """The open balance the visit's invoice must show."""
        return self.invoiced[appointment_id] - sum(
            (
                m.get(appointment_id, Decimal(0))
                for m in (self.copaid, self.remitted, self.paid, self.adjusted, self.credited)
            ),
            Decimal(0),
        )

    @property
    def open_balance(self) -> Decimal:
        return sum((self.balance(a) for a in self.invoiced), Decimal(0))

    def phi_values(self, *, named: set[str] = frozenset()) -> dict[str, str]:  # type: ignore[assignment]
        """What must never leave for QuickBooks or reach a log, labelled: each patient's full name and e-mail
        (except the patients in ``named``, whose names the tenant's naming policy sends), birth date, member id
        and notes, and the clinical fields of visits (diagnosis codes, visit notes)."""
        values: dict[str, str] = {}
        for pid, p in self.patients.items():
            if pid not in named:
                values[f"{pid} name"] = f"{p['first_name']} {p['last_name']}"
                values[f"{pid} email"] = p["email"]
            for key in ("date_of_birth", "insurance_member_id", "notes"):
                if p.get(key):
                    values[f"{pid} {key}"] = p[key]
        values.update({"diagnosis": "M54.5", "diagnosis 2": "S83.2", "visit diagnosis": "M25.561"})
        values["visit note"] = "less pain on stairs"
        return values


class _Clock:
    def __init__(self, start: datetime) -> None:
        self.t = start

    def tick(self) -> str:
        self.t += timedelta(seconds=7)
        return self.t.isoformat().replace("+00:00", "Z")


def pt_week(
    tenant_id: str,
    *,
    appointments: int = 50,
    patients: int = 12,
    seed: int = 7,
    week_start: date = date(2026, 11, 2),
    cancel_rate: float = 0.0,
    no_show_rate: float = 0.0,
    phi: bool = True,
    copays: bool = False,
    remittances: bool = False,
    write_off: bool = False,
    refund: bool = False,
    deposits: bool = False,
    copay_amount: Decimal = Decimal("25.00"),
    reimbursement_rate: Decimal = Decimal("0.80"),
) -> Scenario:
    """Patients, then appointments booked and completed (some cancelled / no-show) over five days.

    Money (all off by default, so the invoice-only scenario is unchanged): ``copays`` collects a copay at
    booking for insurance visits (``deposits``: self-pay visits pay the same amount at booking too);
    ``remittances`` sends one insurer remittance at the end of the week paying
    ``reimbursement_rate`` of what is left and adjusting the rest off (contractual), and has self-pay patients
    pay their visit in full after it; ``write_off`` writes $20 of the first self-pay visit off instead of
    collecting it; ``refund`` has the second self-pay patient overpay by $10 and refunds the $10.
    """
    rnd = random.Random(seed)
    clock = _Clock(datetime.combine(week_start, datetime.min.time(), tzinfo=UTC) - timedelta(days=1))
    sc = Scenario()
    seq = 0

    def ev(etype: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
        nonlocal seq
        seq += 1
        return {
            "id": f"evt-{seed}-{seq:05d}",
            "type": etype,
            "tenant_id": tenant_id,
            "occurred_at": clock.tick(),
            "version": version,
            "data": data,
        }

    for i in range(patients):
        pid = f"pat-{i + 1:03d}"
        data: dict[str, Any] = {
            "patient_id": pid,
            "first_name": FIRST[i % len(FIRST)],
            "last_name": LAST[(i * 7) % len(LAST)],
            "email": f"patient{i + 1}@example.org",
        }
        if phi:
            data.update(
                {
                    "date_of_birth": f"19{60 + i % 40}-0{1 + i % 9}-1{i % 9}",
                    "insurance_member_id": f"MBR{900000 + i}",
                    "diagnosis_codes": ["M54.5", "S83.2"],
                    "notes": f"Post-op knee rehab for {FIRST[i % len(FIRST)]}",
                }
            )
        sc.patients[pid] = data
        sc.events.append(ev("patient.upserted", 1, data))

    visits: list[tuple[str, str, str, date, Decimal]] = []
    for n in range(appointments):
        aid = f"appt-{n + 1:04d}"
        pid = f"pat-{rnd.randrange(patients) + 1:03d}"
        prov, loc = rnd.choice(PROVIDERS), rnd.choice(LOCATIONS)
        day = week_start + timedelta(days=n % 5)
        codes = rnd.sample(sorted(SERVICES), k=rnd.choice([1, 1, 2, 2, 3]))
        lines = []
        for code in codes:
            units = rnd.choice([1, 1, 2, 3]) if code != "97161" else 1
            discount = Decimal("10.00") if rnd.random() < 0.1 else Decimal("0")
            lines.append(
                {
                    "service_code": code,
                    "units": units,
                    "unit_price": str(SERVICES[code]),
                    "discount_amount": str(discount),
                }
            )
        data = {
            "appointment_id": aid,
            "patient_id": pid,
            "provider_id": prov,
            "location_id": loc,
            "service_date": day.isoformat(),
            "payer_type": rnd.choice(["insurance", "insurance", "self_pay"]),
            "modality": rnd.choice(["in_person", "in_person", "in_person", "telehealth"]),
            "lines": lines,
        }
        if phi:
            data["diagnosis_codes"] = ["M25.561"]
            data["notes"] = "Patient reports less pain on stairs"
        sc.events.append(ev("appointment.booked", 1, data))
        visit_total = sum(
            (
                Decimal(str(ln["units"])) * Decimal(str(ln["unit_price"])) - Decimal(str(ln["discount_amount"]))
                for ln in lines
            ),
            Decimal(0),
        ).quantize(Decimal("0.01"))
        copay = Decimal(0)
        if copays and (deposits or data["payer_type"] == "insurance") and visit_total > copay_amount:
            copay = copay_amount
            sc.events.append(
                ev(
                    "payment.collected",
                    1,
                    {
                        "payment_id": f"copay-{aid}",
                        "patient_id": pid,
                        "amount": str(copay),
                        "kind": "copay",
                        "method": "card",
                        "reference": f"ch_{aid}",
                        "received_on": day.isoformat(),
                        "applies_to": [{"appointment_id": aid, "amount": str(copay)}],
                    },
                )
            )
        r = rnd.random()
        if r < cancel_rate:
            sc.events.append(ev("appointment.cancelled", 2, {"appointment_id": aid}))
            continue
        if r < cancel_rate + no_show_rate:
            sc.events.append(ev("appointment.no_show", 2, data))
            continue
        sc.events.append(ev("appointment.completed", 2, data))
        total = sum(
            (
                Decimal(str(ln["units"])) * Decimal(str(ln["unit_price"])) - Decimal(str(ln["discount_amount"]))
                for ln in lines
            ),
            Decimal(0),
        ).quantize(Decimal("0.01"))
        sc.invoiced[aid] = total
        sc.by_provider[prov] = sc.by_provider.get(prov, Decimal(0)) + total
        sc.by_location[loc] = sc.by_location.get(loc, Decimal(0)) + total
        if copay:
            sc.copaid[aid] = copay
            sc.payments += 1
        visits.append((aid, pid, str(data["payer_type"]), day, total))
    if remittances:
        _money_after_visits(sc, visits, ev, reimbursement_rate, write_off=write_off, refund=refund)
    return sc


def _money_after_visits(
    sc: Scenario,
    visits: list[tuple[str, str, str, date, Decimal]],
    ev: Any,
    rate: Decimal,
    *,
    write_off: bool,
    refund: bool,
) -> None:
    """Self-pay patients pay after the visit; the insurer remits the rest of insured visits at week's end."""
    self_pay = [v for v in visits if v[2] == "self_pay"]
    for n, (aid, pid, _, day, total) in enumerate(self_pay):
        credit = Decimal("20.00") if write_off and n == 0 and total > Decimal("20.00") else Decimal(0)
        pay = total - credit - sc.copaid.get(aid, Decimal(0))
        extra = Decimal("10.00") if refund and n == 1 else Decimal(0)
        data = {
            "payment_id": f"pay-{aid}",
            "patient_id": pid,
            "amount": str(pay + extra),
            "kind": "patient",
            "method": "check",
            "reference": f"chk-{aid}",
            "received_on": (day + timedelta(days=1)).isoformat(),
            "applies_to": [{"appointment_id": aid, "amount": str(pay)}],
        }
        sc.events.append(ev("payment.collected", 1, data))
        sc.paid[aid] = pay
        sc.payments += 1
        if extra:
            sc.events.append(ev("payment.refunded", 2, {**data, "refunded_amount": str(extra)}))
            sc.paid[aid] = pay  # what stays applied; the overpayment comes back
            sc.refunded += extra
        if credit:
            sc.events.append(
                ev(
                    "credit.issued",
                    1,
                    {
                        "credit_id": f"wo-{aid}",
                        "patient_id": pid,
                        "amount": str(credit),
                        "kind": "write_off",
                        "reason": "small balance",
                        "issued_on": (day + timedelta(days=1)).isoformat(),
                        "applies_to": {"appointment_id": aid, "amount": str(credit)},
                    },
                )
            )
            sc.credited[aid] = credit
            sc.credit_memos += 1
    items = []
    for aid, pid, payer, _, total in visits:
        if payer != "insurance":
            continue
        rest = total - sc.copaid.get(aid, Decimal(0))
        paid = (rest * rate).quantize(Decimal("0.01"))
        adjustment = rest - paid
        item: dict[str, Any] = {"appointment_id": aid, "patient_id": pid, "amount": str(paid)}
        if adjustment > 0:
            item["adjustments"] = [{"kind": "contractual", "amount": str(adjustment)}]
            sc.adjusted[aid] = adjustment
            sc.credit_memos += 1
        sc.remitted[aid] = paid
        items.append(item)
    if not items:
        return
    # The insurer's ERA for the week, split the way payers split them: at most MAX_REMITTANCE_ITEMS claims each
    # (the contract's limit per remittance event).
    last_day = max(v[3] for v in visits)
    for k in range(0, len(items), MAX_REMITTANCE_ITEMS):
        chunk = items[k : k + MAX_REMITTANCE_ITEMS]
        n = k // MAX_REMITTANCE_ITEMS + 1
        suffix = "" if len(items) <= MAX_REMITTANCE_ITEMS else f"-{n}"
        sc.events.append(
            ev(
                "insurance.remittance",
                1,
                {
                    "remittance_id": f"era-{last_day.isoformat()}{suffix}",
                    "payer_name": "Acme Health",
                    "received_on": (last_day + timedelta(days=3)).isoformat(),
                    "reference": f"ERA-{n:04d}",
                    "method": "ach",
                    "items": chunk,
                },
            )
        )
        sc.remittance_payments += len({it["patient_id"] for it in chunk})
