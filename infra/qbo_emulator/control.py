"""Python client for the emulator's control API (what tests, the demo and the bench use)."""

from __future__ import annotations

from typing import Any

import requests


class EmulatorControl:
    """Thin wrapper over `{url}/_emulator/...`. Every method raises requests.HTTPError on a non-2xx answer."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._s = requests.Session()

    def _call(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        resp = self._s.request(method, f"{self.url}/_emulator/{path}", json=body, params=params, timeout=self.timeout)
        resp.raise_for_status()
        return resp.json() if resp.content else None

    # ---- setup --------------------
    def reset(self) -> None:
        self._call("POST", "reset")

    def register_app(self, client_id: str, client_secret: str, redirect_uris: list[str]) -> dict[str, Any]:
        return self._call(
            "POST",
            "apps",
            {"client_id": client_id, "client_secret": client_secret, "redirect_uris": redirect_uris},
        )

    def create_realm(
        self,
        realm_id: str | None = None,
        company_name: str | None = None,
        preferences: dict[str, Any] | None = None,
        sales_tax_rate: float | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for key, value in (
            ("realm_id", realm_id),
            ("company_name", company_name),
            ("preferences", preferences),
            ("sales_tax_rate", sales_tax_rate),
        ):
            if value is not None:
                body[key] = value
        return self._call("POST", "realms", body)

    def issue_tokens(self, realm_id: str, client_id: str | None = None) -> dict[str, Any]:
        """Token pair for a realm without the OAuth dance (emulator extension)."""
        return self._call("POST", f"realms/{realm_id}/tokens", {"client_id": client_id} if client_id else {})

    def set_preferences(self, realm_id: str, preferences: dict[str, Any]) -> dict[str, Any]:
        return self._call("PUT", f"realms/{realm_id}/preferences", preferences)

    def books(self, realm_id: str, include_deleted: bool = False) -> dict[str, Any]:
        return self._call("GET", f"realms/{realm_id}/books", params={"include_deleted": int(include_deleted)})

    def ui(self, realm_id: str, entity: str, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"realms/{realm_id}/ui/{entity.lower()}", {"operation": operation, "body": body})

    def revoke_tokens(self, realm_id: str) -> dict[str, Any]:
        return self._call("POST", f"realms/{realm_id}/tokens/revoke")

    def expire_tokens(self, realm_id: str) -> dict[str, Any]:
        return self._call("POST", f"realms/{realm_id}/tokens/expire")

    # ---- faults, limits, settings --------------------
    def set_faults(self, realm_id: str, **faults: Any) -> dict[str, Any]:
        return self._call("PUT", f"realms/{realm_id}/faults", faults)

    def clear_faults(self, realm_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"realms/{realm_id}/faults")

    def set_limits(self, **limits: Any) -> dict[str, Any]:
        return self._call("PUT", "limits", limits)

    def set_settings(self, **settings: Any) -> dict[str, Any]:
        return self._call("PUT", "settings", settings)

    def advance_clock(self, seconds: float) -> float:
        return float(self._call("POST", "clock", {"advance_s": seconds})["now"])

    # ---- webhooks --------------------
    def set_webhooks(self, **config: Any) -> dict[str, Any]:
        return self._call("PUT", "webhooks", config)

    def webhook_events(self) -> list[dict[str, Any]]:
        return self._call("GET", "webhooks/events")

    def webhook_deliveries(self) -> list[dict[str, Any]]:
        return self._call("GET", "webhooks/deliveries")

    def wait_webhooks_idle(self, timeout: float = 10.0) -> bool:
        return bool(self._call("POST", "webhooks/wait_idle", {"timeout": timeout})["idle"])

    # ---- inspection --------------------
    def requests(self, realm: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"since": since}
        if realm:
            params["realm"] = realm
        return self._call("GET", "requests", params=params)

    def stats(self, realm: str | None = None) -> dict[str, Any]:
        return self._call("GET", "stats", params={"realm": realm} if realm else None)
