"""Webhook delivery from the running emulator: signatures, formats, aggregation, retries, drop switch."""

from __future__ import annotations

import json

from infra.qbo_emulator import EmulatorControl, verify_webhook
from tests.integration.conftest_emulator import VERIFIER, Api, Receiver, api, ctl, emulator_server, receiver

__all__ = ["api", "ctl", "emulator_server", "receiver"]


def test_cloudevents_delivery_signed_and_aggregated(ctl: EmulatorControl, api: Api, receiver: Receiver) -> None:
    ctl.set_webhooks(url=receiver.url, format="cloudevents", aggregate_window_s=0.2)
    cust = api.customer("Hook Person")
    inv = api.invoice(cust["Id"], 10)
    got = receiver.wait_for(1)
    assert ctl.wait_webhooks_idle()
    assert len(receiver.received) == 1  # both changes aggregated into one POST
    body = got[0]["body"]
    assert verify_webhook(body, got[0]["headers"]["intuit-signature"], VERIFIER)
    events = json.loads(body)
    assert [(e["type"], e["intuitentityid"]) for e in events] == [
        ("qbo.customer.created.v1", cust["Id"]),
        ("qbo.invoice.created.v1", inv["Id"]),
    ]
    assert all(e["intuitaccountid"] == api.realm_id and e["specversion"] == "1.0" for e in events)


def test_legacy_format_and_retry_keeps_event_ids(ctl: EmulatorControl, api: Api, receiver: Receiver) -> None:
    ctl.set_webhooks(url=receiver.url, format="legacy", retry_schedule_s=[0, 0.05, 0.05], aggregate_window_s=0)
    receiver.statuses = [500, 503]
    api.customer("Retry Person")
    got = receiver.wait_for(3)
    assert [r["status"] for r in got] == [500, 503, 200]
    assert got[0]["body"] == got[1]["body"] == got[2]["body"]  # at-least-once: same payload, same ids
    payload = json.loads(got[2]["body"])
    assert payload["eventNotifications"][0]["dataChangeEvent"]["entities"][0]["operation"] == "Create"
    assert ctl.wait_webhooks_idle()
    deliveries = ctl.webhook_deliveries()
    assert [d["attempt"] for d in deliveries] == [1, 2, 3]
    assert len({tuple(d["event_ids"]) for d in deliveries}) == 1


def test_disabled_webhooks_record_but_do_not_send(ctl: EmulatorControl, api: Api, receiver: Receiver) -> None:
    ctl.set_webhooks(url=receiver.url, enabled=False)
    api.customer("Silent Person")
    assert ctl.wait_webhooks_idle()
    assert receiver.received == []
    assert [e["operation"] for e in ctl.webhook_events()] == ["Create"]
