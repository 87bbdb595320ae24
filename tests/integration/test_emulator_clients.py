"""The emulator driven by two unmodified third-party clients: intuit-oauth's AuthClient and python-quickbooks."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
import requests
from intuitlib.client import AuthClient
from intuitlib.enums import Scopes
from intuitlib.exceptions import AuthClientError
from quickbooks import QuickBooks
from quickbooks.batch import batch_create
from quickbooks.exceptions import AuthorizationException, QuickbooksException
from quickbooks.objects.base import LinkedTxn, Ref
from quickbooks.objects.customer import Customer
from quickbooks.objects.detailline import SalesItemLine, SalesItemLineDetail
from quickbooks.objects.invoice import Invoice
from quickbooks.objects.item import Item
from quickbooks.objects.payment import Payment, PaymentLine

from infra.qbo_emulator import EmulatorControl, EmulatorServer
from tests.integration.conftest_emulator import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, ctl, emulator_server

__all__ = ["ctl", "emulator_server"]
REALM = "9130357766554433"


def connect(url: str, realm: str = REALM) -> AuthClient:
    """Full authorization-code flow: AuthClient builds the URL, the emulator consents and redirects."""
    auth = AuthClient(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, environment=f"{url}/.well-known/openid_configuration")
    consent_url = auth.get_authorization_url([Scopes.ACCOUNTING], state_token="st-123") + f"&realm_id={realm}"
    resp = requests.get(consent_url, allow_redirects=False, timeout=5)
    assert resp.status_code == 302
    callback = urlparse(resp.headers["Location"])
    assert callback.geturl().startswith(REDIRECT_URI)
    params = {k: v[0] for k, v in parse_qs(callback.query).items()}
    assert params["state"] == "st-123" and params["realmId"] == realm
    auth.get_bearer_token(params["code"], realm_id=params["realmId"])
    return auth


def test_discovery_has_intuit_keys(emulator_server: EmulatorServer, ctl: EmulatorControl) -> None:
    doc = requests.get(f"{emulator_server.url}/.well-known/openid_configuration", timeout=5).json()
    for key in (
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "revocation_endpoint",
        "jwks_uri",
    ):
        assert doc[key].startswith(emulator_server.url)


def test_authclient_code_exchange_refresh_rotation_revoke(
    emulator_server: EmulatorServer, ctl: EmulatorControl
) -> None:
    auth = connect(emulator_server.url)
    assert auth.access_token and auth.refresh_token and auth.expires_in == 3600
    assert auth.x_refresh_token_expires_in > 0
    first_refresh = auth.refresh_token
    auth.include_refresh_token_hard_expires_in = True
    auth.refresh()
    assert auth.refresh_token != first_refresh
    assert auth.x_refresh_token_hard_expires_in > 0
    with pytest.raises(AuthClientError) as exc:
        auth.refresh(refresh_token=first_refresh)  # rotated away: no grace period by default
    assert exc.value.status_code == 400 and "invalid_grant" in exc.value.content.decode()
    # Codes are single use.
    with pytest.raises(AuthClientError):
        auth.get_bearer_token("AB-not-a-code")
    current = auth.refresh_token
    assert auth.revoke() is True
    with pytest.raises(AuthClientError) as exc:
        auth.refresh(refresh_token=current)
    assert "invalid_grant" in exc.value.content.decode()
    api = requests.get(
        f"{emulator_server.url}/v3/company/{REALM}/preferences",
        headers={"Authorization": f"Bearer {auth.access_token}"},
        timeout=5,
    )
    assert api.status_code == 401 and api.json()["fault"]["error"][0]["code"] == "3200"


def test_refresh_grace_setting(emulator_server: EmulatorServer, ctl: EmulatorControl) -> None:
    ctl.set_settings(refresh_grace_s=60)
    auth = connect(emulator_server.url)
    old = auth.refresh_token
    auth.refresh()
    auth.refresh(refresh_token=old)  # still inside the grace window
    ctl.advance_clock(61)
    with pytest.raises(AuthClientError):
        auth.refresh(refresh_token=old)


def test_authorize_rejects_unknown_client_and_redirect(emulator_server: EmulatorServer, ctl: EmulatorControl) -> None:
    base = f"{emulator_server.url}/connect/oauth2"
    bad_client = requests.get(
        base,
        params={"client_id": "nope", "response_type": "code", "scope": "x", "redirect_uri": REDIRECT_URI, "state": "s"},
        allow_redirects=False,
    )
    bad_redirect = requests.get(
        base,
        params={
            "client_id": CLIENT_ID,
            "response_type": "code",
            "scope": "x",
            "redirect_uri": "http://evil/cb",
            "state": "s",
        },
        allow_redirects=False,
    )
    assert bad_client.status_code == 400 and bad_redirect.status_code == 400
    wrong_secret = AuthClient(
        CLIENT_ID, "wrong", REDIRECT_URI, environment=f"{emulator_server.url}/.well-known/openid_configuration"
    )
    with pytest.raises(AuthClientError) as exc:
        wrong_secret.refresh(refresh_token="whatever")
    assert exc.value.status_code == 401


def quickbooks_client(url: str) -> QuickBooks:
    auth = connect(url)
    qb = QuickBooks(auth_client=auth, refresh_token=auth.refresh_token, company_id=REALM, minorversion=75)
    # python-quickbooks builds URLs from api_url_v3 (production) / sandbox_api_url_v3; point both at us.
    qb.api_url_v3 = f"{url}/v3"
    qb.sandbox_api_url_v3 = f"{url}/v3"
    return qb


def test_python_quickbooks_end_to_end(
    emulator_server: EmulatorServer, ctl: EmulatorControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests-oauthlib (used by python-quickbooks) refuses plain http unless told this is a local test.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    qb = quickbooks_client(emulator_server.url)
    cust = Customer()
    cust.DisplayName = "Ada Lopez (P-1)"
    cust.GivenName = "Ada"
    cust = cust.save(qb=qb)
    assert cust.Id and cust.SyncToken == "0"
    income = next(a for a in ctl.books(REALM)["Account"] if a["AccountSubType"] == "ServiceFeeIncome")
    item = Item()
    item.Name = "Consultation 60 min"
    item.Type = "Service"
    item.UnitPrice = 120
    item.IncomeAccountRef = Ref()
    item.IncomeAccountRef.value = income["Id"]
    item = item.save(qb=qb)
    inv = Invoice()
    line = SalesItemLine()
    line.Amount = 240
    line.SalesItemLineDetail = SalesItemLineDetail()
    line.SalesItemLineDetail.ItemRef = item.to_ref()
    line.SalesItemLineDetail.Qty = 2
    line.SalesItemLineDetail.UnitPrice = 120
    inv.Line.append(line)
    inv.CustomerRef = cust.to_ref()
    inv.DocNumber = "BK-8841"
    inv = inv.save(qb=qb)
    assert float(inv.TotalAmt) == 240 and float(inv.Balance) == 240
    pay = Payment()
    pay.CustomerRef = cust.to_ref()
    pay.TotalAmt = 240
    pline = PaymentLine()
    pline.Amount = 240
    link = LinkedTxn()
    link.TxnId = inv.Id
    link.TxnType = "Invoice"
    pline.LinkedTxn.append(link)
    pay.Line.append(pline)
    pay = pay.save(qb=qb)
    assert float(pay.UnappliedAmt) == 0
    found = Invoice.filter(DocNumber="BK-8841", qb=qb)
    assert len(found) == 1 and float(found[0].Balance) == 0
    assert Customer.count(qb=qb) == 1
    assert Customer.filter(DisplayName="Nobody", qb=qb) == []
    # Stale SyncToken surfaces as the library's QuickbooksException with code 5010 (it maps 5000-9999 there).
    stale = Customer.get(cust.Id, qb=qb)
    fresh = Customer.get(cust.Id, qb=qb)
    fresh.Notes = "first writer"
    fresh.save(qb=qb)
    stale.Notes = "second writer"
    with pytest.raises(QuickbooksException) as exc:
        stale.save(qb=qb)
    assert exc.value.error_code == 5010
    # Batch with a per-item fault (duplicate DisplayName).
    dup = Customer()
    dup.DisplayName = "Ada Lopez (P-1)"
    new = Customer()
    new.DisplayName = "Leo Lopez (P-2)"
    result = batch_create([dup, new], qb=qb)
    assert len(result.successes) == 1 and result.successes[0].DisplayName == "Leo Lopez (P-2)"
    assert len(result.faults) == 1 and result.faults[0].Error[0].code == "6240"
    # A revoked connection surfaces as AuthorizationException (HTTP 401 checked first by the library).
    ctl.revoke_tokens(REALM)
    with pytest.raises(AuthorizationException):
        Customer.get(cust.Id, qb=qb)
