"""Connecting QuickBooks end to end: the real OAuth handler (API Gateway v1 events, in-process moto) against
the QBO emulator over HTTP — connect, state checks, single-flight refresh, 401 retry, invalid_grant,
reconnect, pacing against the emulator's limits, and no token material in any log output."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import boto3
import pytest
import requests

from infra.qbo_emulator import EmulatorControl, EmulatorServer
from tests import builders as b

CLIENT_ID = "qbsync-test-app"
CLIENT_SECRET = "qbsync-test-secret"
REDIRECT = "https://qbsync.test/v1/oauth/callback"
APP_SECRET_ID = "qbsync/qbo-app"


@dataclass
class Env:
    url: str
    ctl: EmulatorControl
    tenant: str


def _reset_caches() -> None:
    from functions.oauth import handler
    from shared.adapters import dynamo, secrets
    from shared.adapters.qbo import oauth, pacing
    from shared.config import reset_settings_cache

    reset_settings_cache()
    dynamo.reset_binding()
    secrets.reset_client()
    oauth.reset_oauth()
    pacing.reset_pacers()
    handler.service.cache_clear()


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    srv = EmulatorServer(port=0, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uris=[REDIRECT]).start()
    yield srv
    srv.stop()


@pytest.fixture
def env(moto_aws: dict[str, str], emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    ctl = EmulatorControl(emulator.url)
    ctl.reset()
    for k, v in {
        "QBO_ENVIRONMENT": "local",
        "QBO_BASE_URL": emulator.url,
        "QBO_DISCOVERY_URL": f"{emulator.url}/.well-known/openid_configuration",
        "OAUTH_APP_SECRET_ID": APP_SECRET_ID,
        "OAUTH_REDIRECT_URL": REDIRECT,
    }.items():
        monkeypatch.setenv(k, v)
    boto3.client("secretsmanager").create_secret(
        Name=APP_SECRET_ID,
        SecretString=json.dumps({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uri": REDIRECT}),
    )
    _reset_caches()
    from shared.services.tenants import create_tenant

    tenant = create_tenant(b.new_id("clinic"), "Clinic").tenant.tenant_id
    yield Env(emulator.url, ctl, tenant)
    _reset_caches()


def call(
    method: str, path: str, query: dict[str, str] | None = None, body: Any = None, raw: str | None = None
) -> dict[str, Any]:
    from functions.oauth import handler

    event = b.api_gateway_event(method, path, json.dumps(body) if body is not None else raw)
    event["queryStringParameters"] = query
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in (query or {}).items()} if query else None
    return handler.lambda_handler(event, b.lambda_context())


def header(resp: dict[str, Any], name: str) -> str:
    single = resp.get("headers") or {}
    if name in single:
        return str(single[name])
    return str((resp.get("multiValueHeaders") or {})[name][0])


def start_connect(tenant: str, realm: str) -> dict[str, str]:
    """GET /oauth/connect → Intuit (emulator) consent → the callback's query parameters."""
    resp = call("GET", "/oauth/connect", {"tenant": tenant})
    assert resp["statusCode"] == 302, resp
    authorize = header(resp, "Location")
    # The emulator's consent page grants at once; realm_id picks the company the admin would choose.
    granted = requests.get(f"{authorize}&{urlencode({'realm_id': realm})}", allow_redirects=False, timeout=10)
    assert granted.status_code == 302, granted.text
    location = granted.headers["Location"]
    assert location.startswith(REDIRECT)
    return {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}


def connect(tenant: str, realm: str) -> dict[str, Any]:
    return call("GET", "/oauth/callback", start_connect(tenant, realm))


def stored_tokens(realm: str) -> dict[str, Any] | None:
    try:
        raw = boto3.client("secretsmanager").get_secret_value(
            SecretId=f"qbsync/realms/{realm}/tokens", VersionStage="AWSCURRENT"
        )
    except Exception:
        return None
    return dict(json.loads(raw["SecretString"]))


def token_requests(ctl: EmulatorControl, grant: str) -> list[dict[str, Any]]:
    return [r for r in ctl.requests() if r["path"].endswith("/tokens/bearer") and f"grant_type={grant}" in r["body"]]


def new_client(realm: str) -> Any:
    from shared.adapters.qbo.client import QboClient
    from shared.adapters.qbo.tokens import TokenManager

    return QboClient(realm, tokens=TokenManager())


def expire_stored_access_token(realm: str) -> None:
    """Make the stored access token look expired (as an hour later) and expire it at the emulator too."""
    from shared.adapters import secrets

    value = stored_tokens(realm) or {}
    value["access_expires_at"] = time.time() - 1
    secrets.put_json(f"qbsync/realms/{realm}/tokens", value)


# ------------------------------------------------------------------ connect flow
def test_connect_stores_tokens_company_prefs_and_links_the_tenant(env: Env) -> None:
    realm = "4620816365100001"
    env.ctl.create_realm(
        realm,
        company_name="Harbor Physio",
        preferences={"AccountingInfoPrefs": {"ClassTrackingPerTxnLine": True, "TrackDepartments": True}},
    )

    page = connect(env.tenant, realm)

    assert page["statusCode"] == 200 and "Harbor Physio is connected" in page["body"]
    assert header(page, "Content-Type").startswith("text/html")
    tokens = stored_tokens(realm)
    assert tokens and tokens["access_token"] and tokens["refresh_token"] and tokens["token_version"] == 1
    assert tokens["refresh_hard_expires_at"] > time.time() + 86_400  # hard expiry header was asked for
    from shared.adapters.connections import ConnectionRepository
    from shared.adapters.tenants import TenantRepository

    conn = ConnectionRepository().get(realm)
    assert conn is not None and conn.status == "connected"
    assert conn.company["CompanyName"] == "Harbor Physio"
    assert conn.company["ClassTrackingPerTxnLine"] is True and conn.company["TrackDepartments"] is True
    assert set(conn.company) >= {
        "CustomTxnNumbers",
        "AllowDiscount",
        "BookCloseDate",
        "UsingSalesTax",
        "PartnerTaxEnabled",
    }
    assert TenantRepository().get(env.tenant).realm_id == realm  # type: ignore[union-attr]
    assert ConnectionRepository().tenants_of(realm) == [env.tenant]
    assert ConnectionRepository().is_connected(realm)


def test_two_tenants_can_link_to_the_same_company(env: Env) -> None:
    from shared.adapters.connections import ConnectionRepository
    from shared.services.tenants import create_tenant

    other = create_tenant(b.new_id("clinic"), "Second site").tenant.tenant_id
    realm = "4620816365100002"
    assert connect(env.tenant, realm)["statusCode"] == 200
    assert connect(other, realm)["statusCode"] == 200
    assert ConnectionRepository().tenants_of(realm) == sorted([env.tenant, other])


def test_connect_for_an_unknown_tenant_is_404(env: Env) -> None:
    assert call("GET", "/oauth/connect", {"tenant": "nobody"})["statusCode"] == 404


def test_bad_requests_get_json_errors_naming_the_field_and_change_nothing(env: Env) -> None:
    from shared.adapters.connections import ConnectionRepository

    realm = "4620816365100010"
    assert connect(env.tenant, realm)["statusCode"] == 200

    missing = call("GET", "/oauth/connect")
    not_json = call("POST", "/oauth/disconnect", raw="{not json")
    a_list = call("POST", "/oauth/disconnect", body=[env.tenant])
    unknown = call("GET", "/oauth/elsewhere")

    assert (missing["statusCode"], json.loads(missing["body"])["field"]) == (400, "tenant")
    assert (not_json["statusCode"], json.loads(not_json["body"])["field"]) == (400, "body")
    assert (a_list["statusCode"], json.loads(a_list["body"])["field"]) == (400, "body")
    assert unknown["statusCode"] == 404 and json.loads(unknown["body"])["error"] == "NotFound"
    assert ConnectionRepository().status(realm) == "connected"
    assert "refresh_token" in (stored_tokens(realm) or {})


def test_connect_without_the_intuit_app_keys_is_503_with_the_fix(env: Env) -> None:
    boto3.client("secretsmanager").put_secret_value(SecretId=APP_SECRET_ID, SecretString="{}")
    _reset_caches()

    resp = call("GET", "/oauth/connect", {"tenant": env.tenant})

    body = json.loads(resp["body"])
    assert resp["statusCode"] == 503, resp
    assert body["kind"] == "reconnect" and body["qbo_code"] == "app-not-configured"
    assert APP_SECRET_ID in body["qbo_detail"]


# ------------------------------------------------------------------ state checks
def test_replayed_state_shows_a_failure_page_and_stores_nothing_new(env: Env) -> None:
    realm = "4620816365100003"
    params = start_connect(env.tenant, realm)
    assert call("GET", "/oauth/callback", params)["statusCode"] == 200
    before = stored_tokens(realm)

    again = call("GET", "/oauth/callback", params)

    assert again["statusCode"] == 400 and "already been used" in again["body"]
    assert stored_tokens(realm) == before
    assert len(token_requests(env.ctl, "authorization_code")) == 1  # the replay never reached Intuit


def test_forged_state_shows_a_failure_page_and_stores_no_tokens(env: Env) -> None:
    realm = "4620816365100004"
    params = start_connect(env.tenant, realm)
    params["state"] = "forged-" + params["state"][7:]

    page = call("GET", "/oauth/callback", params)

    assert page["statusCode"] == 400 and "not issued by qbsync" in page["body"]
    assert stored_tokens(realm) is None
    assert token_requests(env.ctl, "authorization_code") == []


def test_expired_state_shows_a_failure_page_and_stores_no_tokens(env: Env) -> None:
    from shared.adapters.dynamo import OAuthStateItem

    realm = "4620816365100005"
    params = start_connect(env.tenant, realm)
    item = OAuthStateItem.get(f"OAUTHSTATE#{params['state']}", "STATE")
    item.update(actions=[OAuthStateItem.created_at.set("2020-01-01T00:00:00+00:00")])

    page = call("GET", "/oauth/callback", params)

    assert page["statusCode"] == 400 and "expired" in page["body"]
    assert stored_tokens(realm) is None


# ------------------------------------------------------------------ refresh
def test_twenty_concurrent_workers_cause_exactly_one_refresh(env: Env) -> None:
    realm = "4620816365100006"
    assert connect(env.tenant, realm)["statusCode"] == 200
    env.ctl.expire_tokens(realm)
    expire_stored_access_token(realm)
    clients = [new_client(realm) for _ in range(20)]  # 20 "containers": own TokenManager, own cache
    barrier = threading.Barrier(20)
    errors: list[BaseException] = []

    def work(c: Any) -> None:
        barrier.wait()
        try:
            c.company_info()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert errors == []
    refreshes = token_requests(env.ctl, "refresh_token")
    assert len(refreshes) == 1
    assert all(r["status"] == 200 for r in refreshes)  # no invalid_grant
    assert (stored_tokens(realm) or {})["token_version"] == 2
    from shared.adapters.connections import ConnectionRepository

    assert ConnectionRepository().token_version(realm) == 2


def test_a_401_refreshes_once_and_retries_once(env: Env) -> None:
    realm = "4620816365100007"
    assert connect(env.tenant, realm)["statusCode"] == 200
    client = new_client(realm)
    client.company_info()
    env.ctl.expire_tokens(realm)  # the cached token still looks valid to us; QBO answers 401

    assert client.company_info()["CompanyName"]

    assert client.stats.retries_401 == 1
    assert len(token_requests(env.ctl, "refresh_token")) == 1
    statuses = [r["status"] for r in env.ctl.requests(realm=realm) if "companyinfo" in r["path"]]
    assert statuses[-2:] == [401, 200]


def test_invalid_grant_marks_needs_reconnect_and_a_reconnect_restores_it(env: Env) -> None:
    from shared.adapters.connections import ConnectionRepository
    from shared.adapters.qbo.faults import QboReconnect

    realm = "4620816365100008"
    assert connect(env.tenant, realm)["statusCode"] == 200
    env.ctl.revoke_tokens(realm)
    expire_stored_access_token(realm)

    with pytest.raises(QboReconnect):
        new_client(realm).company_info()
    assert ConnectionRepository().status(realm) == "needs_reconnect"
    assert not ConnectionRepository().is_connected(realm)

    assert connect(env.tenant, realm)["statusCode"] == 200  # the admin follows GET /oauth/connect again
    assert ConnectionRepository().is_connected(realm)
    assert new_client(realm).company_info()["Id"] or True


def test_disconnect_revokes_and_holds_the_realm(env: Env) -> None:
    from shared.adapters.connections import ConnectionRepository
    from shared.adapters.qbo.faults import QboReconnect

    realm = "4620816365100009"
    assert connect(env.tenant, realm)["statusCode"] == 200

    resp = call("POST", "/oauth/disconnect", body={"tenant": env.tenant})

    assert resp["statusCode"] == 200 and json.loads(resp["body"])["status"] == "disconnected"
    assert ConnectionRepository().status(realm) == "disconnected"
    assert "refresh_token" not in (stored_tokens(realm) or {})
    with pytest.raises(QboReconnect):
        new_client(realm).company_info()


# ------------------------------------------------------------------ pacing against the emulator's limits
def test_paced_threads_are_never_throttled_and_a_second_realm_is_not_slowed(env: Env) -> None:
    from shared.adapters.qbo.client import QboClient
    from shared.adapters.qbo.pacing import DynamoPaceStore, PaceLimits, Pacer
    from shared.adapters.qbo.tokens import TokenManager

    busy, quiet = "4620816365100010", "4620816365100011"
    for realm in (busy, quiet):
        assert connect(env.tenant, realm)["statusCode"] == 200
    # The emulator enforces QBO's kind of limits (small ones) and answers 429 beyond them.
    env.ctl.set_limits(enabled=True, per_minute=30, max_inflight=2, batch_per_minute=5)
    env.ctl.set_faults(busy, latency_ms=150)
    limits = PaceLimits(rate_per_period=30, max_inflight=2, batch_per_period=5, period_s=60.0, lease_s=30)
    store, tm = DynamoPaceStore(), TokenManager()
    busy_client = QboClient(busy, tokens=tm, pacer=Pacer(busy, limits=limits, store=store))
    quiet_client = QboClient(quiet, tokens=tm, pacer=Pacer(quiet, limits=limits, store=store))
    errors: list[BaseException] = []
    busy_done: list[float] = []

    def one_call() -> None:
        try:
            busy_client.read("Item", "1")
            busy_done.append(time.monotonic())
        except BaseException as exc:
            errors.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=one_call) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the busy realm is now waiting on its budget
    quiet_client.read("Item", "1")
    busy_finished_before_quiet = len(busy_done)
    for t in threads:
        t.join(timeout=30)
    busy_elapsed = time.monotonic() - started

    assert errors == []
    assert env.ctl.stats(realm=busy).get("throttled", 0) == 0  # no 429: neither rate nor concurrency
    # Not queued behind the busy realm: the quiet realm's call was done while the busy realm still waited on its
    # budget (an order, not a timed bound).
    assert busy_finished_before_quiet < 6 and len(busy_done) == 6
    # burst of 3, then one per interval: the budget was spread, not spent at once.
    assert busy_elapsed >= 3 * limits.gcra("request")[0]


# ------------------------------------------------------------------ no token material in logs
def test_no_token_material_in_any_log_output(
    env: Env, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO)  # every library at INFO (Lambda default: WARNING); ours at DEBUG
    caplog.set_level(logging.DEBUG, logger="qbsync")
    from shared.adapters.qbo.faults import QboReconnect

    realm = "4620816365100012"
    params = start_connect(env.tenant, realm)
    call("GET", "/oauth/callback", params)
    call("GET", "/oauth/callback", params)  # replay
    first = dict(stored_tokens(realm) or {})
    client = new_client(realm)
    env.ctl.expire_tokens(realm)
    client.company_info()  # 401 → refresh
    second = dict(stored_tokens(realm) or {})
    env.ctl.revoke_tokens(realm)
    expire_stored_access_token(realm)
    with pytest.raises(QboReconnect) as err:
        new_client(realm).company_info()

    out = capsys.readouterr()
    text = "\n".join([out.out, out.err, caplog.text, *(r.getMessage() for r in caplog.records), str(err.value)])
    secrets_seen = [
        params["code"],
        params["state"],
        first["access_token"],
        first["refresh_token"],
        second["access_token"],
        second["refresh_token"],
        CLIENT_SECRET,
    ]
    assert out.out  # the Powertools logger did write (JSON to stdout)
    for value in secrets_seen:
        assert value not in text
