"""Tenants and settings as plain records: validated with pydantic where a person sets them, loaded without it in
the workers (whose cold start would otherwise pay for pydantic), and the two ways agree."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from shared.config import Settings, SettingsError
from shared.domain.plain import from_stored, to_json, validated
from shared.domain.tenant import (
    EntityToggles,
    MatchingSettings,
    PayerTypeMapping,
    Tenant,
    TenantMappings,
    TenantSettings,
)

TENANT = Tenant(
    tenant_id="clinic-1",
    name="Clinic",
    realm_id="9130",
    signing_secret_id="qbsync/tenants/clinic-1/signing",
    settings=TenantSettings(
        naming_policy="initials",
        entities=EntityToggles(credits=False),
        accounting_start_date=date(2026, 1, 1),
        matching=MatchingSettings(auto_accept_threshold=0.8),
    ),
    mappings=TenantMappings(
        services={"97110": "Therapeutic Exercise"},
        payer_types={"insurance": PayerTypeMapping(item_suffix=" (Ins)", income_account="4010")},
        deposit_account="Undeposited Funds",
    ),
    created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
)


def _ddb(value: Any) -> Any:
    """What DynamoDB gives back for stored JSON: numbers as Decimal."""
    if isinstance(value, dict):
        return {k: _ddb(v) for k, v in value.items()}
    if isinstance(value, float | int) and not isinstance(value, bool):
        return Decimal(str(value))
    return value


def test_a_stored_tenant_loads_back_equal_without_pydantic() -> None:
    stored = _ddb(to_json(TENANT))
    assert stored["settings"]["matching"]["auto_accept_threshold"] == Decimal("0.8")
    loaded = from_stored(Tenant, stored)
    assert loaded == TENANT
    assert isinstance(loaded.settings.matching.auto_accept_threshold, float)
    assert isinstance(loaded.mappings.payer_types["insurance"], PayerTypeMapping)
    assert loaded.settings.accounting_start_date == date(2026, 1, 1)


def test_loading_keeps_defaults_for_missing_keys_and_ignores_unknown_ones() -> None:
    """Rows written by an older version lack new settings; rows written by a newer one may have more."""
    loaded = from_stored(TenantSettings, {"direction": "both", "entities": {"payments": False}, "future": 1})
    assert loaded == TenantSettings(direction="both", entities=EntityToggles(payments=False))


def test_validation_agrees_with_the_plain_record() -> None:
    assert validated(Tenant, to_json(TENANT)) == TENANT
    assert validated(TenantSettings, {}) == TenantSettings()


@pytest.mark.parametrize(
    ("cls", "data", "loc"),
    [
        (TenantSettings, {"entites": {}}, ("entites",)),  # a typo is an error, not a setting ignored
        (TenantSettings, {"entities": {"invoice": False}}, ("entities", "invoice")),
        (TenantSettings, {"doc_number_prefix": "QB 1"}, ("doc_number_prefix",)),
        (TenantSettings, {"doc_number_prefix": "TOOLONGPREFIX"}, ("doc_number_prefix",)),
        (TenantSettings, {"matching": {"auto_accept_threshold": 1.5}}, ("matching", "auto_accept_threshold")),
        (TenantSettings, {"direction": "sideways"}, ("direction",)),
        (TenantMappings, {"services": {"97110": ""}}, ("services", "97110")),
        (TenantMappings, {"payer_types": {"insurance": {"item_suffix": "x" * 31}}}, ("payer_types", "insurance")),
        (Tenant, {**to_json(TENANT), "tenant_id": "bad id"}, ("tenant_id",)),
        (Tenant, {**to_json(TENANT), "name": ""}, ("name",)),
    ],
)
def test_validation_names_the_bad_field(cls: type[Any], data: dict[str, Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as err:
        validated(cls, data)
    assert err.value.errors()[0]["loc"][: len(loc)] == loc


def test_settings_read_the_environment_with_types_and_defaults() -> None:
    s = Settings.from_env(
        {"LEDGER_TABLE": "L", "QBO_BATCH_SIZE": "12", "QBSYNC_TRACING": "TRUE", "RETRY_BASE_S": "2.5"}
    )
    assert (s.ledger_table, s.qbo_batch_size, s.tracing_enabled, s.retry_base_s) == ("L", 12, True, 2.5)
    assert (s.qbo_environment, s.sync_concurrency, s.secrets_prefix) == ("sandbox", 100, "qbsync")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "LEDGER_TABLE"),
        ({"QBO_BATCH_SIZE": "twelve"}, "QBO_BATCH_SIZE"),
        ({"QBO_BATCH_SIZE": "1.5"}, "QBO_BATCH_SIZE"),
        ({"SYNC_CONCURRENCY": "0"}, "SYNC_CONCURRENCY"),
        ({"SYNC_CONCURRENCY": "101"}, "SYNC_CONCURRENCY"),
        ({"RETRY_BASE_S": "0"}, "RETRY_BASE_S"),
        ({"QBO_ENVIRONMENT": "staging"}, "QBO_ENVIRONMENT"),
        ({"QBSYNC_TRACING": "maybe"}, "QBSYNC_TRACING"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], named: str) -> None:
    base = {} if named == "LEDGER_TABLE" else {"LEDGER_TABLE": "L"}
    with pytest.raises(SettingsError, match=named):
        Settings.from_env({**base, **env})


WORKERS = [
    "functions.sync_worker.handler",
    "functions.qbo_change_worker.handler",
    "functions.qbo_webhook.handler",
    "functions.callback_sender.handler",
    "functions.cdc_sweep.handler",
    "functions.retry_sweep.handler",
    "functions.oauth.handler",
]


def test_functions_that_take_no_input_from_people_do_not_import_pydantic() -> None:
    """pydantic's import and first model cost about one ``import boto3``: only the booking webhook (events) and
    the ops API (settings, lazily) need it."""
    code = f"import sys\nfor m in {WORKERS!r}:\n    __import__(m)\nprint('pydantic' in sys.modules)"
    env = {
        **os.environ,
        "LEDGER_TABLE": "LedgerTable",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"
