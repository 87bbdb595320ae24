"""Platform callbacks: enqueue to the CallbackQueue (SQS) and send signed POSTs to the tenant's callback URL.

SQS retries a failed send (visibility timeout) and moves the message to the DLQ after 5 receives
(template.yaml). Each callback has a deterministic ``id``: a repeat carries the same id, so the platform
deduplicates on it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from shared.adapters import aws, secrets
from shared.adapters.tenants import TenantRepository
from shared.config import get_settings
from shared.domain import signing
from shared.domain.errors import RetryableError

CALLBACK_ID_HEADER = "X-Qbsync-Callback-Id"


def _sqs() -> Any:
    return aws.client("sqs")


def reset_clients() -> None:
    aws.reset()


class CallbackQueue:
    """Implements ``CallbackSink`` for the change worker."""

    def __init__(self, queue_url: str | None = None) -> None:
        self.queue_url = queue_url or get_settings().callback_queue_url

    def enqueue(self, callback: dict[str, Any]) -> None:
        _sqs().send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(callback, separators=(",", ":")))


class Undeliverable(Exception):
    """The callback cannot be sent and retrying will not help (no tenant, no URL, callbacks off)."""


class CallbackSender:
    def __init__(self, tenants: TenantRepository | None = None, *, timeout_s: float = 10.0) -> None:
        self._tenants = tenants or TenantRepository()
        self._timeout_s = timeout_s
        self._session: Any = None

    def send(self, callback: dict[str, Any], *, now: float | None = None) -> int:
        """POST the callback, signed with the tenant's current secret. Returns the HTTP status.

        Raises Undeliverable (drop it) or RetryableError (non-2xx, network error: SQS retries, then DLQ).
        """
        import requests  # only the sender pays for it

        tenant = self._tenants.get(str(callback.get("tenant_id", "")))
        if tenant is None or tenant.status != "active":
            raise Undeliverable("unknown or disabled tenant")
        if not tenant.callback_url:
            raise Undeliverable("tenant has no callback_url")
        if tenant.settings.direction == "to_qbo":
            raise Undeliverable("tenant syncs to QuickBooks only")
        secret = secrets.get_json(tenant.signing_secret_id).get("current")
        if not isinstance(secret, str) or not secret:
            raise RetryableError("tenant signing secret has no current value", tenant_id=tenant.tenant_id)
        body = json.dumps(callback, separators=(",", ":"), sort_keys=True).encode()
        ts = int(time.time() if now is None else now)
        headers = {
            "Content-Type": "application/json",
            signing.TENANT_HEADER: tenant.tenant_id,
            signing.SIGNATURE_HEADER: signing.sign(body, secret, ts),
            CALLBACK_ID_HEADER: str(callback.get("id", "")),
        }
        if self._session is None:
            self._session = requests.Session()
        try:
            resp = self._session.post(tenant.callback_url, data=body, headers=headers, timeout=self._timeout_s)
        except requests.RequestException as exc:
            raise RetryableError(f"callback POST failed: {type(exc).__name__}", tenant_id=tenant.tenant_id) from exc
        if not 200 <= resp.status_code < 300:
            raise RetryableError(f"callback answered {resp.status_code}", tenant_id=tenant.tenant_id)
        return int(resp.status_code)
