"""The demo clinic's QuickBooks company and its qbsync mappings (shared by the demo, e2e tests and bench)."""

from __future__ import annotations

from typing import Any

from infra.qbo_emulator.control import EmulatorControl

PT_ITEMS = {
    "97110": "Therapeutic Exercise",
    "97140": "Manual Therapy",
    "97161": "PT Evaluation",
    "97530": "Therapeutic Activities",
    "NO_SHOW": "No-show Fee",
}
PROVIDERS = {"prov-a": "Dr. Adams", "prov-b": "Dr. Baker", "prov-c": "Dr. Chen"}
LOCATIONS = {"loc-1": "Downtown", "loc-2": "Northside"}


def setup_company(control: EmulatorControl, realm_id: str, *, classes: bool = True, departments: bool = True) -> None:
    """What the clinic's bookkeeper has in QuickBooks before connecting: service items, classes, locations."""
    income = next(a for a in control.books(realm_id)["Account"] if a.get("AccountType") == "Income")
    for name in PT_ITEMS.values():
        control.ui(
            realm_id, "Item", "create", {"Name": name, "Type": "Service", "IncomeAccountRef": {"value": income["Id"]}}
        )
    for name in PROVIDERS.values():
        control.ui(realm_id, "Class", "create", {"Name": name})
    for name in LOCATIONS.values():
        control.ui(realm_id, "Department", "create", {"Name": name})
    control.set_preferences(
        realm_id, {"AccountingInfoPrefs": {"ClassTrackingPerTxn": classes, "TrackDepartments": departments}}
    )


def mappings(*, classes: bool = True, departments: bool = True) -> dict[str, Any]:
    m: dict[str, Any] = {"services": dict(PT_ITEMS)}
    if classes:
        m["providers"] = dict(PROVIDERS)
    if departments:
        m["locations"] = dict(LOCATIONS)
    return m
