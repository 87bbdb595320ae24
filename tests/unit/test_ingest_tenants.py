"""Tenant administration (service + ``qbsync tenants`` CLI) against in-process AWS."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from click.testing import CliRunner

from shared.adapters import secrets
from shared.cli.main import cli
from shared.domain.errors import BadRequest, Conflict, NotFound
from shared.services import tenants as svc


@pytest.fixture
def aws(moto_aws: dict[str, str]) -> Iterator[dict[str, str]]:
    secrets.reset_client()
    yield moto_aws
    secrets.reset_client()


def run(*args: str) -> Any:
    result = CliRunner().invoke(cli, ["tenants", *args])
    return result


def secret_value(tenant_id: str) -> dict[str, Any]:
    sm = boto3.client("secretsmanager")
    raw = sm.get_secret_value(SecretId=f"qbsync/tenants/{tenant_id}/signing", VersionStage="AWSCURRENT")
    return dict(json.loads(raw["SecretString"]))


def test_create_stores_the_tenant_and_a_new_signing_secret(aws: dict[str, str]) -> None:
    created = svc.create_tenant("clinic-1", "Clinic", callback_url="https://platform.example/cb")
    assert len(created.signing_secret) >= 40
    assert secret_value("clinic-1") == {"current": created.signing_secret, "previous": None}
    tenant = svc.get_tenant("clinic-1")
    assert tenant.settings.naming_policy == "redacted"
    assert tenant.settings.matching.auto_accept_threshold == 0.92
    assert tenant.signing_secret_id == "qbsync/tenants/clinic-1/signing"


def test_creating_an_existing_tenant_is_a_conflict_and_keeps_its_secret(aws: dict[str, str]) -> None:
    first = svc.create_tenant("clinic-1", "Clinic")
    with pytest.raises(Conflict):
        svc.create_tenant("clinic-1", "Clinic again")
    assert secret_value("clinic-1")["current"] == first.signing_secret


@pytest.mark.parametrize("bad_id", ["", "has space", "a:b", "x" * 65])
def test_an_invalid_tenant_id_is_rejected(aws: dict[str, str], bad_id: str) -> None:
    with pytest.raises(BadRequest):
        svc.create_tenant(bad_id, "Clinic")


def test_rotation_moves_current_to_previous(aws: dict[str, str]) -> None:
    first = svc.create_tenant("clinic-1", "Clinic").signing_secret
    second = svc.rotate_signing_secret("clinic-1").signing_secret
    assert secret_value("clinic-1") == {"current": second, "previous": first}


def test_set_changes_settings_and_mappings_and_validates(aws: dict[str, str]) -> None:
    svc.create_tenant("clinic-1", "Clinic")
    t = svc.update_tenant(
        "clinic-1",
        changes={
            "naming_policy": "initials",
            "entities.payments": False,
            "mappings.services": {"97110": "PT Exercise"},
            "mappings.deposit_account": "Undeposited Funds",
        },
    )
    assert t.settings.naming_policy == "initials" and t.settings.entities.payments is False
    assert svc.get_tenant("clinic-1").mappings.services == {"97110": "PT Exercise"}
    with pytest.raises(BadRequest) as err:
        svc.update_tenant("clinic-1", changes={"naming_policy": "everything"})
    assert err.value.field == "naming_policy"
    with pytest.raises(BadRequest):
        svc.update_tenant("clinic-1", changes={"naming_polcy": "initials"})


def test_set_on_an_unknown_tenant_is_not_found(aws: dict[str, str]) -> None:
    with pytest.raises(NotFound):
        svc.update_tenant("ghost", changes={"naming_policy": "initials"})


def test_cli_create_list_show_rotate_set(aws: dict[str, str]) -> None:
    created = run(
        "create", "--tenant-id", "clinic-1", "--name", "Clinic", "--callback-url", "https://x.test/cb", "--json"
    )
    assert created.exit_code == 0, created.output
    secret = json.loads(created.output)["signing_secret"]
    assert secret_value("clinic-1")["current"] == secret

    listed = json.loads(run("list", "--json").output)
    assert [t["tenant_id"] for t in listed] == ["clinic-1"]
    shown = run("show", "clinic-1", "--json")
    assert secret not in shown.output and json.loads(shown.output)["callback_url"] == "https://x.test/cb"

    rotated = json.loads(run("rotate-secret", "clinic-1", "--json").output)
    assert secret_value("clinic-1") == {"current": rotated["signing_secret"], "previous": secret}

    changed = run("set", "clinic-1", "tax_policy=tax_line", "matching.auto_accept_threshold=0.8", "--json")
    assert changed.exit_code == 0, changed.output
    assert json.loads(changed.output)["settings"]["matching"]["auto_accept_threshold"] == 0.8


def test_cli_errors_are_one_clear_line(aws: dict[str, str]) -> None:
    run("create", "--tenant-id", "clinic-1", "--name", "Clinic")
    again = run("create", "--tenant-id", "clinic-1", "--name", "Clinic")
    assert again.exit_code == 1 and "already exists" in again.output and "Traceback" not in again.output
    bad = run("set", "clinic-1", "cancel_policy=shred")
    assert bad.exit_code == 1 and "cancel_policy" in bad.output


def test_cli_help_lists_every_subcommand() -> None:
    out = CliRunner().invoke(cli, ["tenants", "--help"]).output
    for name in ("create", "list", "show", "rotate-secret", "set"):
        assert name in out
