"""A tenant: one practice on the booking platform, its QBO link, sync settings and mappings.

Settings and mappings are stored as JSON on the tenant record; these models are their schema (unknown keys
are rejected so a typo in ``qbsync tenants set`` is an error, not a silently ignored setting).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# A QBO reference as the admin gives it: the entity's name (resolved and cached by the worker) or its Id.
QboRef = Annotated[str, Field(min_length=1, max_length=100)]
# Tenant ids become part of secret names, so only characters Secrets Manager allows in names.
TenantId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@\-]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EntityToggles(_Strict):
    customers: bool = True
    invoices: bool = True
    payments: bool = True
    credits: bool = True


class MatchingSettings(_Strict):
    # Score at or above which an existing QBO customer is linked without a human look.
    auto_accept_threshold: float = Field(default=0.92, ge=0.0, le=1.0)


class TenantSettings(_Strict):
    naming_policy: Literal["redacted", "initials", "full_name_with_consent"] = "redacted"
    direction: Literal["to_qbo", "from_qbo", "both"] = "to_qbo"
    entities: EntityToggles = Field(default_factory=EntityToggles)
    accounting_start_date: date | None = None
    invoice_trigger: Literal["appointment_completed", "invoice_finalized"] = "appointment_completed"
    doc_number_prefix: str = Field(default="QB", max_length=8, pattern=r"^[A-Za-z0-9\-]*$")
    cancel_policy: Literal["void", "delete"] = "void"
    no_show_fee: Literal["none", "invoice_fee"] = "none"
    tax_policy: Literal["none", "tax_code", "tax_line"] = "none"
    unapplied_copay_policy: Literal["unapplied", "hold"] = "unapplied"
    refund_policy: Literal["refund_receipt", "reverse_payment"] = "refund_receipt"
    write_off_prefix: str = Field(default="WO-", max_length=8)
    credit_prefix: str = Field(default="CR-", max_length=8)
    item_auto_create: bool = False
    matching: MatchingSettings = Field(default_factory=MatchingSettings)


class PayerTypeMapping(_Strict):
    """How a payer type shows in QBO: a suffix on the service item's name, or its own income account."""

    item_suffix: str | None = Field(default=None, max_length=30)
    income_account: QboRef | None = None


class TenantMappings(_Strict):
    """Platform codes → QBO references (names or Ids).

    ``services`` keys are a service code (``"97110"``) or, for tenants that split revenue further,
    ``"code|payer_type|modality"`` with ``*`` as a wildcard (``"97110|insurance|*"``); the most specific
    key wins.
    """

    services: dict[str, QboRef] = Field(default_factory=dict)
    providers: dict[str, QboRef] = Field(default_factory=dict)  # provider id → Class
    locations: dict[str, QboRef] = Field(default_factory=dict)  # location id → Department
    payer_types: dict[str, PayerTypeMapping] = Field(default_factory=dict)
    tax_codes: dict[str, QboRef] = Field(default_factory=dict)
    payment_methods: dict[str, QboRef] = Field(default_factory=dict)
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


class Tenant(BaseModel):
    model_config = ConfigDict(frozen=True)

    tenant_id: TenantId
    name: str = Field(min_length=1, max_length=100)
    status: TenantStatus = "active"
    realm_id: str | None = None
    signing_secret_id: str
    callback_url: str | None = None
    settings: TenantSettings = Field(default_factory=TenantSettings)
    mappings: TenantMappings = Field(default_factory=TenantMappings)
    created_at: datetime
    updated_at: datetime | None = None

    def summary(self) -> dict[str, object]:
        """What ``qbsync tenants list/show`` prints (never a secret value)."""
        return self.model_dump(mode="json")
