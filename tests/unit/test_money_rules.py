"""Pure money rules: payment shapes, refunds, remittance slots, credit prefixes, marker parsing."""

from __future__ import annotations

from decimal import Decimal

from shared.domain import money as rules
from shared.domain.tenant import TenantSettings

READY = rules.Target("appointment:a1", "ready", "101")
PENDING = rules.Target("appointment:a2", "pending")
CLOSED = rules.Target("appointment:a3", "closed")
TARGETS = {t.key: t for t in (READY, PENDING, CLOSED)}


def test_ready_targets_are_linked_and_the_rest_stays_unapplied() -> None:
    shape = rules.shape_payment(
        "60.00", [("appointment:a1", "25.00"), ("appointment:a3", "35.00")], TARGETS, may_post_unapplied=False
    )
    assert [(ln.invoice_id, ln.amount) for ln in shape.links] == [("101", Decimal("25.00"))]
    assert shape.unapplied == Decimal("35.00") and shape.waiting_on == "appointment:a3" and not shape.hold


def test_a_pending_target_holds_unless_posting_unapplied_is_allowed() -> None:
    allocs = [("appointment:a2", "25.00")]
    assert rules.shape_payment("25.00", allocs, TARGETS, may_post_unapplied=False).hold
    shape = rules.shape_payment("25.00", allocs, TARGETS, may_post_unapplied=True)
    assert not shape.hold and shape.links == [] and shape.waiting_on == "appointment:a2"


def test_reversed_refund_takes_unapplied_money_first_then_links() -> None:
    allocs = [("appointment:a1", "100.00")]
    shape = rules.shape_payment("110.00", allocs, TARGETS, may_post_unapplied=True, refunded="30", reverse_refund=True)
    assert shape.total == Decimal("80.00") and shape.links[0].amount == Decimal("80.00")
    full = rules.shape_payment("110.00", allocs, TARGETS, may_post_unapplied=True, refunded="110", reverse_refund=True)
    assert full.delete and full.links == []


def test_target_state() -> None:
    assert rules.target_state("active", {"id": "1", "state": "active"}, True) == "ready"
    assert rules.target_state("active", {"id": "1", "state": "voided"}, False) == "closed"
    assert rules.target_state("draft", None, False) == "pending"
    assert rules.target_state("active", None, True) == "pending"
    assert rules.target_state("cancelled", None, False) == "closed"


def test_remittance_groups_per_patient_and_numbers_adjustments() -> None:
    plan = rules.plan_remittance(
        [
            {
                "appointment_id": "a1",
                "patient_id": "p1",
                "amount": "100",
                "adjustments": [{"kind": "contractual", "amount": "20"}, {"kind": "write_off", "amount": "0"}],
            },
            {"invoice_id": "i2", "patient_id": "p2", "amount": "50"},
            {
                "appointment_id": "a3",
                "patient_id": "p1",
                "amount": "10",
                "adjustments": [{"kind": "write_off", "amount": "5"}],
            },
        ]
    )
    assert plan.payments == {
        "p1": [("appointment:a1", "100"), ("appointment:a3", "10")],
        "p2": [("invoice:i2", "50")],
    }
    assert [(a.credit_slot, a.apply_slot, a.kind) for a in plan.adjustments] == [
        ("credit:0.0", "apply:0.0", "contractual"),
        ("credit:2.0", "apply:2.0", "write_off"),
    ]


def test_write_offs_and_credits_have_their_own_prefix() -> None:
    s = TenantSettings(write_off_prefix="WO-", credit_prefix="CR-")
    assert rules.credit_prefix("write_off", s) == "WO-"
    assert rules.credit_prefix("contractual", s) == rules.credit_prefix("courtesy", s) == "CR-"
    assert len(rules.credit_doc_number("WRITEOFF", "X" * 20)) == 21


def test_deletions_run_appliers_first_and_creations_credit_memos_first() -> None:
    slots = ["payment:p1", "credit:0.0", "apply:0.0", "refund", "creditmemo"]
    assert sorted(slots, key=rules.slot_rank)[0] == "apply:0.0"
    assert sorted(slots, key=rules.slot_rank, reverse=True)[-1] == "apply:0.0"


def test_marker_candidates_cover_ids_with_colons() -> None:
    cands = rules.parse_marker_candidates("Voided - qbsync:ABC123:remittance:era:1:payment:p1")
    assert ("remittance:era:1", "payment:p1") in cands and ("remittance:era", "1:payment:p1") in cands
    assert rules.parse_marker_candidates("someone else's note") == []
