"""In-memory state: settings, realms (books + per-realm lock) and the seed company."""

from __future__ import annotations

import copy
import threading
from dataclasses import asdict, dataclass, field, fields
from decimal import Decimal
from typing import Any

from .util import Clock, fmt_ts

NAME_LIST = (
    "Customer",
    "Vendor",
    "Employee",
    "Item",
    "Account",
    "Class",
    "Department",
    "PaymentMethod",
    "TaxCode",
    "TaxRate",
    "Term",
)
SALES_FORMS = ("Invoice", "CreditMemo", "RefundReceipt", "SalesReceipt")
TRANSACTIONS = (*SALES_FORMS, "Payment", "Deposit")
SINGLETONS = ("Preferences", "CompanyInfo")
ALL_ENTITIES = (*NAME_LIST, *TRANSACTIONS, *SINGLETONS)
BY_LOWER = {name.lower(): name for name in ALL_ENTITIES}
# DisplayName must be unique across these three lists (QBO error 6240).
PEOPLE = ("Customer", "Vendor", "Employee")


@dataclass
class Settings:
    """Behaviour switches. Where the reference marks a behaviour unverified the default is stricter."""

    requestid_mode: str = "honored"  # "honored" | "ignored" (reports that requestid does not prevent duplicates)
    requestid_retention_s: float = 86400.0  # retention window is undocumented
    inactive_names_block: bool = True  # inactive Customer/Vendor/Employee still block a DisplayName (6240)
    batch_sees_own_creates: bool = False  # QBO: an item cannot see objects created earlier in the same batch
    accept_any_bearer: bool = False
    refresh_grace_s: float = 0.0  # previous refresh token stays valid this long after rotation
    access_token_ttl_s: int = 3600
    refresh_token_ttl_s: int = 8726400
    refresh_token_hard_ttl_s: int = 5 * 365 * 86400
    throttle_xml: bool = False  # send the 429 body as XML like QBO sometimes does
    void_invoice_with_payments: bool = False  # reported: cannot void an invoice with a payment applied
    refundreceipt_void: bool = False  # API void of RefundReceipt unverified
    cdc_max_objects: int = 1000
    cdc_lookback_days: int = 30
    query_max_results: int = 1000
    strict_amount_check: bool = True  # 6070 when Amount != Qty x UnitPrice

    def update(self, data: dict[str, Any]) -> None:
        """Apply a partial dict.

        Raises:
            KeyError: unknown setting name.
        """
        names = {f.name for f in fields(self)}
        for key, value in data.items():
            if key not in names:
                raise KeyError(key)
            setattr(self, key, value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Limits:
    enabled: bool = True
    per_minute: int = 500
    max_inflight: int = 10
    batch_per_minute: int = 40
    batch_max_items: int = 30

    def update(self, data: dict[str, Any]) -> None:
        """Raises: KeyError on an unknown key."""
        names = {f.name for f in fields(self)}
        for key, value in data.items():
            if key not in names:
                raise KeyError(key)
            setattr(self, key, value)


DEFAULT_PREFERENCES: dict[str, Any] = {
    "AccountingInfoPrefs": {
        "TrackDepartments": False,
        "DepartmentTerminology": "Location",
        "ClassTrackingPerTxn": False,
        "ClassTrackingPerTxnLine": False,
        "CustomerTerminology": "Customers",
        "UseAccountNumbers": False,
    },
    "SalesFormsPrefs": {
        "CustomTxnNumbers": False,
        "AllowDiscount": True,
        "AllowDeposit": True,
        "AllowShipping": False,
        "AllowServiceDate": True,
        "AutoApplyCredit": True,
        "AutoApplyPayments": True,
        "DefaultTerms": {"value": "3"},
    },
    "TaxPrefs": {"UsingSalesTax": True, "PartnerTaxEnabled": False},
    "CurrencyPrefs": {"MultiCurrencyEnabled": False, "HomeCurrency": {"value": "USD"}},
    "OtherPrefs": {"NameValue": []},
}


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge patch into a copy of base (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class RealmFaults:
    error_rate: float = 0.0
    error_status: int = 500
    latency_ms: int = 0
    outage_until: float = 0.0
    force_401: bool = False
    throttle_until: float = 0.0
    drop_rate: float = 0.0
    drop_next: int = 0
    drop_entities: list[str] = field(default_factory=list)


class Realm:
    """One QBO company. All reads and writes of its books happen under `lock`."""

    def __init__(
        self,
        realm_id: str,
        company_name: str,
        clock: Clock,
        settings: Settings,
        *,
        preferences: dict[str, Any] | None = None,
        sales_tax_rate: Decimal | None = None,
    ) -> None:
        self.realm_id = realm_id
        self.settings = settings
        self.company_name = company_name
        self.clock = clock
        self.lock = threading.RLock()
        self.objects: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in ALL_ENTITIES}
        # (entity, id) -> tombstone; also kept for CDC
        self.deleted: dict[tuple[str, str], dict[str, Any]] = {}
        # (entity, id) -> float timestamp of last change, for CDC ordering at sub-second precision
        self.changed_at: dict[tuple[str, str], float] = {}
        self._next_id = 1
        self._next_docnum = 1001
        self.requestids: dict[str, tuple[float, int, str]] = {}
        self.faults = RealmFaults()
        self.created_at = clock.now()
        self._seed(preferences or {}, sales_tax_rate)

    # ---- ids -------------------------------------------------------------------------------------------
    def new_id(self) -> str:
        ident = str(self._next_id)
        self._next_id += 1
        return ident

    def next_docnum(self, entity: str) -> str:
        """Auto-number for sales forms, skipping numbers already used by that entity."""
        used = {o.get("DocNumber") for o in self.objects[entity].values()}
        while str(self._next_docnum) in used:
            self._next_docnum += 1
        num = str(self._next_docnum)
        self._next_docnum += 1
        return num

    # ---- access ----------------------------------------------------------------------------------------
    def get(self, entity: str, ident: str) -> dict[str, Any] | None:
        return self.objects[entity].get(str(ident))

    @property
    def preferences(self) -> dict[str, Any]:
        return self.objects["Preferences"]["1"]

    def pref(self, section: str, key: str, default: Any = None) -> Any:
        return self.preferences.get(section, {}).get(key, default)

    def meta(self, created: float | None = None) -> dict[str, str]:
        now = self.clock.now()
        return {"CreateTime": fmt_ts(created if created is not None else now), "LastUpdatedTime": fmt_ts(now)}

    def put(self, entity: str, obj: dict[str, Any]) -> None:
        self.objects[entity][obj["Id"]] = obj
        self.changed_at[(entity, obj["Id"])] = self.clock.now()

    def books(self, include_deleted: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for entity, objs in self.objects.items():
            if objs:
                out[entity] = [copy.deepcopy(o) for o in sorted(objs.values(), key=_id_key)]
        if include_deleted and self.deleted:
            out["Deleted"] = [dict(t, entity=e) for (e, _), t in self.deleted.items()]
        return out

    def info(self) -> dict[str, Any]:
        return {
            "realm_id": self.realm_id,
            "company_name": self.company_name,
            "preferences": copy.deepcopy(self.preferences),
        }

    # ---- seed ------------------------------------------------------------------------------------------
    def _add(self, entity: str, obj: dict[str, Any]) -> dict[str, Any]:
        if "Id" not in obj:
            # Seed ids count per entity (Item 1 = "Services", like a new QBO company).
            obj["Id"] = str(sum(1 for o in self.objects[entity].values() if str(o["Id"]).isdigit()) + 1)
        obj.setdefault("SyncToken", "0")
        obj.setdefault("domain", "QBO")
        obj.setdefault("sparse", False)
        obj["MetaData"] = self.meta()
        self.put(entity, obj)
        return obj

    def _seed(self, preferences: dict[str, Any], sales_tax_rate: Decimal | None) -> None:
        accounts = [
            ("Services", "Income", "ServiceFeeIncome", "Revenue"),
            ("Sales of Product Income", "Income", "SalesOfProductIncome", "Revenue"),
            ("Discounts given", "Income", "DiscountsRefundsGiven", "Revenue"),
            ("Undeposited Funds", "Other Current Asset", "UndepositedFunds", "Asset"),
            ("Accounts Receivable (A/R)", "Accounts Receivable", "AccountsReceivable", "Asset"),
            ("Checking", "Bank", "Checking", "Asset"),
            ("Sales Tax Payable", "Other Current Liability", "SalesTaxPayable", "Liability"),
            ("Opening Balance Equity", "Equity", "OpeningBalanceEquity", "Equity"),
        ]
        for name, atype, sub, cls in accounts:
            self._add(
                "Account",
                {
                    "Name": name,
                    "FullyQualifiedName": name,
                    "AccountType": atype,
                    "AccountSubType": sub,
                    "Classification": cls,
                    "Active": True,
                    "SubAccount": False,
                    "CurrentBalance": Decimal(0),
                    "CurrentBalanceWithSubAccounts": Decimal(0),
                    "CurrencyRef": {"value": "USD", "name": "United States Dollar"},
                },
            )
        self._add(
            "Item",
            {
                "Name": "Services",
                "FullyQualifiedName": "Services",
                "Type": "Service",
                "Active": True,
                "Taxable": False,
                "UnitPrice": Decimal(0),
                "IncomeAccountRef": {"value": self.account_id("ServiceFeeIncome"), "name": "Services"},
            },
        )
        for name, ptype in [
            ("Cash", "NON_CREDIT_CARD"),
            ("Check", "NON_CREDIT_CARD"),
            ("Visa", "CREDIT_CARD"),
            ("MasterCard", "CREDIT_CARD"),
            ("American Express", "CREDIT_CARD"),
            ("Discover", "CREDIT_CARD"),
        ]:
            self._add("PaymentMethod", {"Name": name, "Type": ptype, "Active": True})
        for name, days in [("Due on receipt", 0), ("Net 15", 15), ("Net 30", 30)]:
            self._add("Term", {"Name": name, "Active": True, "Type": "STANDARD", "DueDays": days})
        self._add(
            "TaxCode",
            {
                "Id": "TAX",
                "Name": "TAX",
                "Description": "TAX",
                "Active": True,
                "Taxable": True,
                "TaxGroup": False,
            },
        )
        self._add(
            "TaxCode",
            {
                "Id": "NON",
                "Name": "NON",
                "Description": "NON",
                "Active": True,
                "Taxable": False,
                "TaxGroup": False,
            },
        )
        if sales_tax_rate is not None:
            rate = self._add(
                "TaxRate",
                {
                    "Name": "Sales Tax",
                    "RateValue": Decimal(str(sales_tax_rate)),
                    "Active": True,
                    "AgencyRef": {"value": "1"},
                    "SpecialTaxType": "NONE",
                    "DisplayType": "ReadOnly",
                },
            )
            self._add(
                "TaxCode",
                {
                    "Name": "Sales Tax",
                    "Description": "Sales Tax",
                    "Active": True,
                    "Taxable": True,
                    "TaxGroup": True,
                    "SalesTaxRateList": {
                        "TaxRateDetail": [
                            {
                                "TaxRateRef": {"value": rate["Id"], "name": "Sales Tax"},
                                "TaxTypeApplicable": "TaxOnAmount",
                                "TaxOrder": 0,
                            }
                        ]
                    },
                    "PurchaseTaxRateList": {"TaxRateDetail": []},
                },
            )
        prefs = deep_merge(DEFAULT_PREFERENCES, preferences)
        self._add("Preferences", dict(prefs, Id="1"))
        self._add(
            "CompanyInfo",
            {
                "Id": "1",
                "CompanyName": self.company_name,
                "LegalName": self.company_name,
                "Country": "US",
                "CompanyAddr": {
                    "Id": "1",
                    "Line1": "2600 Marine Way",
                    "City": "Mountain View",
                    "CountrySubDivisionCode": "CA",
                    "PostalCode": "94043",
                    "Country": "US",
                },
                "FiscalYearStartMonth": "January",
                "SupportedLanguages": "en",
                "DefaultTimeZone": "America/Los_Angeles",
                "NameValue": [{"Name": "OfferingSku", "Value": "QuickBooks Online Plus"}],
            },
        )
        # Seeded objects should not show up in a CDC window that starts after realm creation.
        self._next_id = max(self._next_id, 100)

    def account_id(self, subtype: str) -> str:
        for acc in self.objects["Account"].values():
            if acc.get("AccountSubType") == subtype:
                return str(acc["Id"])
        raise KeyError(subtype)

    def default_tax_code(self) -> dict[str, Any] | None:
        for code in self.objects["TaxCode"].values():
            if code.get("SalesTaxRateList", {}).get("TaxRateDetail"):
                return code
        return None


def _id_key(obj: dict[str, Any]) -> tuple[int, str]:
    ident = str(obj.get("Id", ""))
    return (int(ident), "") if ident.isdigit() else (1 << 60, ident)


id_sort_key = _id_key
