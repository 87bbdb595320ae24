"""HMAC-SHA256 request signing, shared by inbound webhooks (``POST /v1/events``) and outbound callbacks.

Scheme (documented in ``docs/openapi.json``)::

    X-Qbsync-Tenant: <tenant_id>
    X-Qbsync-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]

    <hex> = HMAC-SHA256(key=signing secret, msg=f"{t}.".encode() + raw body bytes)

Several ``v1=`` values are allowed so a sender can sign with its current and previous secret during a
rotation; the receiver accepts the request if any value matches any of its active secrets. The
timestamp is part of the signed message, so a captured request cannot be replayed outside the tolerance.

Pure functions: no I/O, no clock (the caller passes ``now``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from shared.domain.errors import Unauthorized

TENANT_HEADER = "X-Qbsync-Tenant"
SIGNATURE_HEADER = "X-Qbsync-Signature"
SCHEME = "v1"
# More than a handful of candidate signatures is never legitimate; the cap bounds the work per request.
MAX_SIGNATURES = 5
_MAX_HEADER_LEN = 1024


@dataclass(frozen=True)
class ParsedSignature:
    timestamp: int
    signatures: tuple[str, ...]


def compute(body: bytes, secret: str, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``f"{timestamp}."`` + ``body`` under ``secret``."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(body: bytes, secrets: str | Sequence[str], timestamp: int) -> str:
    """The ``X-Qbsync-Signature`` header value for ``body``: one ``v1=`` per secret, in the order given."""
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    if not keys:
        raise ValueError("at least one secret is needed to sign")
    return ",".join([f"t={timestamp}", *(f"{SCHEME}={compute(body, k, timestamp)}" for k in keys)])


def parse(header: str) -> ParsedSignature:
    """Split a signature header into its timestamp and ``v1`` signatures.

    Raises Unauthorized (field ``X-Qbsync-Signature``) when the header is malformed.
    """
    if len(header) > _MAX_HEADER_LEN:
        raise _unauthorized("signature header is too long")
    timestamp: int | None = None
    sigs: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise _unauthorized("signature header must look like t=<unix seconds>,v1=<hex>")
        if key == "t":
            # ASCII only: str.isdigit() also accepts superscripts and other scripts, which int() rejects.
            if timestamp is not None or not (value.isascii() and value.isdigit()):
                raise _unauthorized("signature header needs exactly one numeric t=")
            timestamp = int(value)
        elif key == SCHEME:
            sigs.append(value.lower())
        # Unknown schemes (a future v2) are ignored so senders can add them before receivers know them.
    if timestamp is None:
        raise _unauthorized("signature header has no t= timestamp")
    if not sigs:
        raise _unauthorized("signature header has no v1= signature")
    if len(sigs) > MAX_SIGNATURES:
        raise _unauthorized(f"signature header carries more than {MAX_SIGNATURES} v1= values")
    return ParsedSignature(timestamp=timestamp, signatures=tuple(sigs))


def check_timestamp(parsed: ParsedSignature, *, now: float, tolerance_s: int) -> None:
    """Raises Unauthorized when the signed timestamp is further than ``tolerance_s`` from ``now``."""
    if abs(now - parsed.timestamp) > tolerance_s:
        raise _unauthorized(f"signature timestamp is outside the {tolerance_s} s tolerance (check the clock)")


def matches(body: bytes, parsed: ParsedSignature, secrets: Sequence[str]) -> bool:
    """True if any ``v1`` signature equals the HMAC under any secret (constant-time comparisons)."""
    found = False
    for secret in secrets:
        if not secret:
            continue
        expected = compute(body, secret, parsed.timestamp)
        for candidate in parsed.signatures:
            # No early exit: the time taken does not depend on which secret or candidate matched.
            found |= hmac.compare_digest(expected, candidate)
    return found


def verify(body: bytes, header: str, secrets: Sequence[str], *, now: float, tolerance_s: int) -> ParsedSignature:
    """Check a signature header against the body and the active secrets (current first, then previous).

    Raises Unauthorized when the header is malformed, the timestamp is stale or no signature matches.
    """
    parsed = parse(header)
    check_timestamp(parsed, now=now, tolerance_s=tolerance_s)
    if not matches(body, parsed, secrets):
        raise _unauthorized("signature does not match the body under the tenant's signing secret")
    return parsed


def _unauthorized(message: str) -> Unauthorized:
    return Unauthorized(message, field=SIGNATURE_HEADER)
