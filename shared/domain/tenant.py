"""A tenant: one practice on the booking platform, its QBO link, sync settings and mappings.

Settings and mappings are stored as JSON on the tenant record; these records are their schema (unknown keys
are rejected so a typo in ``qbsync tenants set`` is an error, not a silently ignored setting). They are plain
dataclasses (``shared.domain.plain``): validated with pydantic where a person sets them, loaded without it in the
workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Annotated, Any, Literal

from shared.domain.plain import STRICT, Rules, to_json

# A QBO reference as the admin gives it: the entity's name (resolved and cached by the worker) or its Id.
QboRef = Annotated[str, Rules(min_length=1, max_length=100)]
# Tenant ids become part of secret names, so only characters Secrets Manager allows in names.
TenantId = Annotated[str, Rules(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@\-]*$")]
Unit = Annotated[float, Rules(ge=0.0, le=1.0)]
DocPrefix = Annotated[str, Rules(max_length=8, pattern=r"^[A-Za-z0-9\-]*$")]
Prefix = Annotated[str, Rules(max_length=8)]
Suffix = Annotated[str, Rules(max_length=30)]
Name = Annotated[str, Rules(min_length=1, max_length=100)]


@dataclass(frozen=True, kw_only=True)
class EntityToggles:
    __pydantic_config__ = STRICT

    customers: bool = True
    invoices: bool = True
    payments: bool = True
    credits: bool = True


@dataclass(frozen=True, kw_only=True)
class MatchingSettings:
    __pydantic_config__ = STRICT

    # Score at or above which an existing QBO customer is linked without a human look.
    auto_accept_threshold: Unit = 0.92


@dataclass(frozen=True, kw_only=True)
class TenantSettings:
    __pydantic_config__ = STRICT

    naming_policy: Literal["redacted", "initials", "full_name_with_consent"] = "redacted"
    direction: Literal["to_qbo", "from_qbo", "both"] = "to_qbo"
    entities: EntityToggles = field(default_factory=EntityToggles)
    accounting_start_date: date | None = None
    invoice_trigger: Literal["appointment_completed", "invoice_finalized"] = "appointment_completed"
    doc_number_prefix: DocPrefix = "QB"
    cancel_policy: Literal["void", "delete"] = "void"
    no_show_fee: Literal["none", "invoice_fee"] = "none"
    tax_policy: Literal["none", "tax_code", "tax_line"] = "none"
    unapplied_copay_policy: Literal["unapplied", "hold"] = "unapplied"
    refund_policy: Literal["refund_receipt", "reverse_payment"] = "refund_receipt"
    write_off_prefix: Prefix = "WO-"
    credit_prefix: Prefix = "CR-"
    item_auto_create: bool = False
    matching: MatchingSettings = field(default_factory=MatchingSettings)


@dataclass(frozen=True, kw_only=True)
class PayerTypeMapping:
    """How a payer type shows in QBO: a suffix on the service item's name, or its own income account."""

    __pydantic_config__ = STRICT

    item_suffix: Suffix | None = None
    income_account: QboRef | None = None


@dataclass(frozen=True, kw_only=True)
class TenantMappings:
    """Platform codes → QBO references (names or Ids).

    ``services`` keys are a service code (``"97110"``) or, for tenants that split revenue further,
    ``"code|payer_type|modality"`` with ``*`` as a wildcard (``"97110|insurance|*"``); the most specific
    key wins.
    """

    __pydantic_config__ = STRICT

    services: dict[str, QboRef] = field(default_factory=dict)
    providers: dict[str, QboRef] = field(default_factory=dict)  # provider id → Class
    locations: dict[str, QboRef] = field(default_factory=dict)  # location id → Department
    payer_types: dict[str, PayerTypeMapping] = field(default_factory=dict)
    tax_codes: dict[str, QboRef] = field(default_factory=dict)
    payment_methods: dict[str, QboRef] = field(default_factory=dict)
    deposit_account: QboRef | None = None

    def service_item(self, code: str, payer: str, modality: str) -> str | None:
        """The mapped item name of a service line, before the payer suffix: the most specific key wins
        (code|payer|modality, then wildcards, then the bare code)."""
        for key in (f"{code}|{payer}|{modality}", f"{code}|{payer}|*", f"{code}|*|{modality}", f"{code}|*|*", code):
            if key in self.services:
                return self.services[key]
        return None

    def item_suffix(self, payer: str) -> str:
        """What the payer type's mapping appends to item names ("" when it has none)."""
        payer_map = self.payer_types.get(payer)
        return (payer_map.item_suffix if payer_map else None) or ""


TenantStatus = Literal["active", "disabled"]


@dataclass(frozen=True, kw_only=True)
class Tenant:
    tenant_id: TenantId
    name: Name
    status: TenantStatus = "active"
    realm_id: str | None = None
    signing_secret_id: str
    callback_url: str | None = None
    settings: TenantSettings = field(default_factory=TenantSettings)
    mappings: TenantMappings = field(default_factory=TenantMappings)
    created_at: datetime
    updated_at: datetime | None = None

    def summary(self) -> dict[str, Any]:
        """What ``qbsync tenants list/show`` prints (never a secret value)."""
        summary: dict[str, Any] = to_json(self)
        return summary
