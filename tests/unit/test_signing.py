"""shared.domain.signing: the HMAC scheme shared by inbound webhooks and outbound callbacks."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from shared.domain import signing
from shared.domain.errors import Unauthorized

BODY = b'{"id":"evt-1"}'
NOW = 1_800_000_000


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(b"s3cret", f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert signing.sign(BODY, "s3cret", NOW) == f"t={NOW},v1={expected}"


def test_a_signed_body_verifies() -> None:
    header = signing.sign(BODY, "s3cret", NOW)
    assert signing.verify(BODY, header, ["s3cret"], now=NOW + 10, tolerance_s=300).timestamp == NOW


def test_any_of_several_v1_values_may_match_any_active_secret() -> None:
    header = signing.sign(BODY, ["other", "new"], NOW)
    signing.verify(BODY, header, ["new", "old"], now=NOW, tolerance_s=300)


def test_the_previous_secret_still_verifies() -> None:
    header = signing.sign(BODY, "old", NOW)
    signing.verify(BODY, header, ["new", "old"], now=NOW, tolerance_s=300)


@pytest.mark.parametrize("skew", [301, -301])
def test_a_timestamp_outside_the_tolerance_is_rejected(skew: int) -> None:
    header = signing.sign(BODY, "s3cret", NOW)
    with pytest.raises(Unauthorized, match="tolerance"):
        signing.verify(BODY, header, ["s3cret"], now=NOW + skew, tolerance_s=300)


def test_a_changed_body_is_rejected() -> None:
    header = signing.sign(BODY, "s3cret", NOW)
    with pytest.raises(Unauthorized, match="does not match"):
        signing.verify(BODY + b" ", header, ["s3cret"], now=NOW, tolerance_s=300)


def test_a_signature_from_another_timestamp_is_rejected() -> None:
    sig = signing.compute(BODY, "s3cret", NOW)
    with pytest.raises(Unauthorized):
        signing.verify(BODY, f"t={NOW + 1},v1={sig}", ["s3cret"], now=NOW, tolerance_s=300)


@pytest.mark.parametrize(
    "header",
    ["", "v1=abc", f"t={NOW}", "t=soon,v1=abc", f"t={NOW},t={NOW},v1=abc", "garbage", f"t={NOW}," + "v1=a," * 6],
)
def test_a_malformed_header_is_rejected(header: str) -> None:
    with pytest.raises(Unauthorized) as err:
        signing.verify(BODY, header, ["s3cret"], now=NOW, tolerance_s=300)
    assert err.value.field == signing.SIGNATURE_HEADER


def test_unknown_schemes_are_ignored_next_to_v1() -> None:
    header = signing.sign(BODY, "s3cret", NOW) + ",v2=whatever"
    signing.verify(BODY, header, ["s3cret"], now=NOW, tolerance_s=300)


def test_empty_secrets_never_match() -> None:
    header = signing.sign(BODY, "x", NOW)
    assert not signing.matches(BODY, signing.parse(header), ["", ""])


def test_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(signing.hmac, "compare_digest", spy)
    header = signing.sign(BODY, ["a", "b"], NOW)
    assert signing.matches(BODY, signing.parse(header), ["a", "c"])
    assert len(calls) == 4  # every candidate against every secret, no early exit
