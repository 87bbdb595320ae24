"""Rotating a tenant's signing secret rejects nothing during the overlap, and secrets live only in Secrets
Manager (never in the ledger table)."""

from __future__ import annotations

import threading
import time
from typing import Any

from tests import builders as b
from tests.integration.conftest import raw_table_dump
from tests.security.conftest import Poster, TenantKeys, stored_ids


def _rotate_elsewhere(tenant_id: str) -> str:
    """``qbsync tenants rotate-secret`` run by an admin: another process, so this container's caches of the
    secret stay as they were (the handler must notice the new secret by itself)."""
    import json

    import boto3

    from shared.services.tenants import new_signing_secret, signing_secret_name

    sm = boto3.client("secretsmanager")
    name = signing_secret_name(tenant_id)
    current = json.loads(sm.get_secret_value(SecretId=name)["SecretString"])["current"]
    fresh = new_signing_secret()
    sm.put_secret_value(SecretId=name, SecretString=json.dumps({"current": fresh, "previous": current}))
    return fresh


def test_rotation_under_load_rejects_no_event(post: Poster, tenant: TenantKeys) -> None:
    """A sender keeps posting, signing with the secret it knows; the secret is rotated mid-stream by another
    process (the handler's cached keyring still holds the old one) and the sender switches to the new one
    right away. Every request is a 202: the old secret stays valid as "previous", the new one works at once."""
    known = {"secret": tenant.secret}
    answers: list[tuple[int, str, str]] = []  # (status, which secret signed, event id)
    stop = threading.Event()

    def sender() -> None:
        while not stop.is_set():
            secret = known["secret"]
            ev = b.appointment_completed(tenant_id=tenant.tenant_id)
            a = post(ev, secret=secret)
            answers.append((a.status, "old" if secret == tenant.secret else "new", ev["id"]))

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        time.sleep(0.3)  # old-secret traffic, keyring warm
        fresh = _rotate_elsewhere(tenant.tenant_id)
        time.sleep(0.3)  # the sender has not heard yet: still the old secret, now "previous"
        known["secret"] = fresh
        time.sleep(0.5)  # new-secret traffic
    finally:
        stop.set()
        thread.join(10)

    statuses = {s for s, _, _ in answers}
    assert statuses == {202}, [a for a in answers if a[0] != 202][:3]
    assert {w for _, w, _ in answers} == {"old", "new"}
    assert stored_ids(tenant.tenant_id, [i for _, _, i in answers]) == {i for _, _, i in answers}
    # A sender that has both signs with both during its own switch-over: also accepted.
    assert post(b.appointment_completed(tenant_id=tenant.tenant_id), secret=[tenant.secret, fresh]).status == 202


def test_after_the_next_rotation_the_oldest_secret_is_refused(post: Poster, tenant: TenantKeys) -> None:
    from shared.services.tenants import rotate_signing_secret
    from tests.security.conftest import reset_caches

    second = rotate_signing_secret(tenant.tenant_id).signing_secret
    third = rotate_signing_secret(tenant.tenant_id).signing_secret
    reset_caches()
    assert post(b.appointment_completed(tenant_id=tenant.tenant_id), secret=third).status == 202
    assert post(b.appointment_completed(tenant_id=tenant.tenant_id), secret=second).status == 202
    assert post(b.appointment_completed(tenant_id=tenant.tenant_id), secret=tenant.secret).status == 401


def test_signing_secrets_are_only_in_secrets_manager(post: Poster, tenant: TenantKeys, moto_aws: Any) -> None:
    import boto3

    from shared.services.tenants import rotate_signing_secret, signing_secret_name

    fresh = rotate_signing_secret(tenant.tenant_id).signing_secret
    assert post(b.appointment_completed(tenant_id=tenant.tenant_id), secret=fresh).status == 202
    dump = raw_table_dump()
    assert tenant.secret not in dump and fresh not in dump
    value = boto3.client("secretsmanager").get_secret_value(SecretId=signing_secret_name(tenant.tenant_id))
    assert fresh in value["SecretString"] and tenant.secret in value["SecretString"]
