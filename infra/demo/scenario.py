"""A realistic physical-therapy week as booking-platform events (deterministic for a seed).

Used by ``make demo``, the end-to-end tests and the benchmarks. ``expected`` holds what the books must show.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

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

    @property
    def total(self) -> Decimal:
        return sum(self.invoiced.values(), Decimal(0))


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
) -> Scenario:
    """Patients, then appointments booked and completed (some cancelled / no-show) over five days."""
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
        r = rnd.random()
        if r < cancel_rate:
            sc.events.append(ev("appointment.cancelled", 2, {"appointment_id": aid}))
            continue
        if r < cancel_rate + no_show_rate:
            sc.events.append(ev("appointment.no_show", 2, data))
            continue
        sc.events.append(ev("appointment.completed", 2, data))
        total = sum(
            (Decimal(ln["units"]) * Decimal(ln["unit_price"]) - Decimal(ln["discount_amount"]) for ln in lines),
            Decimal(0),
        ).quantize(Decimal("0.01"))
        sc.invoiced[aid] = total
        sc.by_provider[prov] = sc.by_provider.get(prov, Decimal(0)) + total
        sc.by_location[loc] = sc.by_location.get(loc, Decimal(0)) + total
    return sc
