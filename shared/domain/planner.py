"""The reconcile planner: which QBO documents a source object should have, and what to do per slot.

Pure functions. The sync service resolves references (customer, items, classes...) and builds the
documents; the planner decides, from desired vs synced state, the one action each slot needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from shared.domain.tenant import TenantSettings

Action = Literal["create", "update", "void", "delete", "none", "skip"]


@dataclass(frozen=True)
class SlotPlan:
    slot: str
    entity: str  # QBO entity type
    action: Action
    reason: str = ""


def wants_invoice(kind: str, lifecycle: str, desired: dict[str, Any], settings: TenantSettings) -> tuple[bool, str]:
    """Whether the object should have an Invoice now, and why not when it should not."""
    if not settings.entities.invoices:
        return False, "invoices are not synced for this tenant"
    if kind == "appointment":
        if settings.invoice_trigger != "appointment_completed":
            return False, "tenant invoices from finalized invoices, not appointments"
        if lifecycle == "no_show":
            fee = desired.get("no_show_fee")
            if settings.no_show_fee == "invoice_fee" and fee not in (None, "0", "0.00", 0):
                return True, ""
            return False, "no-show without a fee rule"
        if lifecycle == "active":
            return True, ""
        return False, {"draft": "appointment not completed", "cancelled": "appointment cancelled"}.get(
            lifecycle, f"appointment {lifecycle}"
        )
    if kind == "invoice":
        if settings.invoice_trigger != "invoice_finalized":
            return False, "tenant invoices from completed appointments, not platform invoices"
        return (lifecycle == "active"), ("" if lifecycle == "active" else f"invoice {lifecycle}")
    return False, f"{kind} has no invoice"


def before_start_date(txn_date: str | None, settings: TenantSettings) -> bool:
    """Documents dated before the tenant's accounting start date are never posted."""
    if not txn_date or settings.accounting_start_date is None:
        return False
    return date.fromisoformat(txn_date) < settings.accounting_start_date


def plan_slot(
    *,
    slot: str,
    entity: str,
    desired_fp: str | None,
    synced: dict[str, Any] | None,
    lifecycle: str,
    settings: TenantSettings,
) -> SlotPlan:
    """The action for one document slot.

    ``desired_fp`` is the fingerprint of the document the object should have (None: it should have none);
    ``synced`` what qbsync recorded for the slot (``id``, ``fingerprint``, ``state``).
    """
    exists = bool(synced and synced.get("id") and synced.get("state") not in ("deleted",))
    if desired_fp is None:
        if not exists or synced is None:
            return SlotPlan(slot, entity, "none")
        if synced.get("state") == "voided":
            if lifecycle == "deleted" or (settings.cancel_policy == "delete" and lifecycle == "cancelled"):
                return SlotPlan(slot, entity, "delete")
            return SlotPlan(slot, entity, "none")
        if lifecycle in ("draft",):
            # Back to booked after invoicing: keep the books as they are; the next completion updates them.
            return SlotPlan(slot, entity, "none", "appointment reopened; invoice kept")
        if entity == "Invoice" and lifecycle in ("cancelled", "voided", "no_show"):
            voiding = lifecycle == "voided" or settings.cancel_policy == "void"
            return SlotPlan(slot, entity, "void" if voiding else "delete")
        return SlotPlan(slot, entity, "delete")
    if not exists or synced is None:
        return SlotPlan(slot, entity, "create")
    if synced.get("fingerprint") != desired_fp or synced.get("state") == "voided":
        return SlotPlan(slot, entity, "update")
    return SlotPlan(slot, entity, "none")
