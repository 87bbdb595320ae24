"""The OpenAPI 3.1 document of the QuickBooks-facing routes: connect / callback / disconnect (OAuthFunction) and
Intuit's change notifications (QboWebhookFunction).

``python -m shared.domain.quickbooks_openapi`` rewrites ``docs/quickbooks-openapi.json`` (``--check`` only
compares; a test checks the committed copy, and another that every route of template.yaml is in one of the
project's OpenAPI documents).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.domain.openapi import error, json_content, write_or_check
from shared.domain.qbo_notices import SIGNATURE_HEADER

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "quickbooks-openapi.json"

_DESCRIPTION = """The routes QuickBooks Online and a practice's admin use: connecting a QuickBooks company to a
tenant (OAuth 2.0 authorization-code flow with Intuit), disconnecting it, and Intuit's webhook of changes made in
QuickBooks. None of them calls QuickBooks on the request path except the OAuth callback (the token exchange and
one company read) and the disconnect (token revocation). How to register the Intuit app:
docs/connecting-quickbooks.md."""


def _page(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _query(name: str, description: str, *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": {"type": "string"}, "description": description}


_INTUIT_FAILED = error("Intuit refused or failed (the discovery document, the token endpoint); try again.")
_NOT_CONFIGURED = error(
    "The Intuit app's keys are not configured yet: `details` name the secret to fill (`qbo_code` app-not-configured)."
)


def _connect() -> dict[str, Any]:
    return {
        "operationId": "connectQuickBooks",
        "summary": "Start connecting a QuickBooks company to a tenant",
        "description": "Redirects the admin's browser to Intuit's consent page with a fresh single-use `state` "
        "(10 minutes) bound to the tenant. The company the admin picks there is linked on the callback.",
        "parameters": [_query("tenant", "The qbsync tenant to connect.", required=True)],
        "responses": {
            "302": {
                "description": "To Intuit's consent page.",
                "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}},
            },
            "400": error("`tenant` is missing."),
            "404": error("Unknown tenant."),
            "502": _INTUIT_FAILED,
            "503": _NOT_CONFIGURED,
        },
    }


def _callback() -> dict[str, Any]:
    return {
        "operationId": "quickBooksCallback",
        "summary": "Intuit's redirect after consent (the app's registered redirect URI)",
        "description": "Checks `state` (single use, 10 minutes), exchanges `code` for tokens (stored only in "
        "Secrets Manager), reads the company's name and preferences and links the tenant. Answers with a page for "
        "the admin's browser.",
        "parameters": [
            _query("code", "The authorization code."),
            _query("state", "The state qbsync issued on connect."),
            _query("realmId", "The QuickBooks company the admin chose."),
            _query("error", "Set by Intuit when the admin declined."),
        ],
        "responses": {
            "200": _page("Connected."),
            "400": _page("Declined, or a missing, forged, expired or replayed state: nothing is stored."),
            "500": _page("An unexpected error (logged); nothing half-connected is used."),
            "502": _page("Intuit or QuickBooks failed the exchange or the company read; start again."),
        },
    }


def _disconnect() -> dict[str, Any]:
    return {
        "operationId": "disconnectQuickBooks",
        "summary": "Disconnect a tenant's QuickBooks company",
        "description": "Revokes the grant at Intuit, clears the tokens from Secrets Manager and marks the "
        "connection `disconnected`, which holds the outgoing work of every tenant on that company until it is "
        "connected again.",
        "security": [{"sigv4": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["tenant"],
                        "properties": {"tenant": {"type": "string"}},
                    }
                }
            },
        },
        "responses": {
            "200": json_content(
                {
                    "type": "object",
                    "required": ["tenant", "realm_id", "status"],
                    "properties": {
                        "tenant": {"type": "string"},
                        "realm_id": {"type": "string"},
                        "status": {"const": "disconnected"},
                    },
                },
                "Disconnected.",
            ),
            "400": error("The body is not a JSON object, or `tenant` is missing."),
            "404": error("Unknown tenant, or a tenant without a QuickBooks connection."),
            "502": _INTUIT_FAILED,
            "503": _NOT_CONFIGURED,
        },
    }


def _webhook() -> dict[str, Any]:
    legacy = {
        "type": "object",
        "required": ["eventNotifications"],
        "properties": {
            "eventNotifications": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "realmId": {"type": "string"},
                        "dataChangeEvent": {
                            "type": "object",
                            "properties": {
                                "entities": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "name": {"type": "string"},
                                            "id": {"type": "string"},
                                            "operation": {"type": "string"},
                                            "lastUpdated": {"type": "string"},
                                            "deletedId": {"type": "string"},
                                        },
                                    },
                                }
                            },
                        },
                    },
                },
            }
        },
    }
    cloudevent = {
        "type": "object",
        "required": ["specversion", "id", "type"],
        "properties": {
            "specversion": {"type": "string"},
            "id": {"type": "string"},
            "source": {"type": "string"},
            "type": {"type": "string", "description": "qbo.<entity>.<operation>.v1"},
            "time": {"type": "string"},
            "intuitentityid": {"type": "string"},
            "intuitaccountid": {"type": "string", "description": "The realm id."},
            "data": {"type": "object"},
        },
    }
    return {
        "operationId": "quickBooksWebhook",
        "summary": "Intuit's change notifications (legacy and CloudEvents formats)",
        "description": f"Verified with `{SIGNATURE_HEADER}` (base64 HMAC-SHA256 of the raw body with the app's "
        "verifier token), deduplicated and stored; the change worker reads the changed entities later (nothing "
        "here calls QuickBooks, so Intuit gets its answer well within 3 s). Unknown realms and entities are "
        "counted and ignored.",
        "security": [{"intuitSignature": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"oneOf": [legacy, {"type": "array", "items": cloudevent}, cloudevent]}}
            },
        },
        "responses": {
            "200": json_content(
                {"type": "object"}, "Stored (or already stored): counts of stored, duplicate, ignored."
            ),
            "400": error("The body is not JSON, or neither format."),
            "401": error(f"`{SIGNATURE_HEADER}` is missing or does not match, or no verifier token is set."),
        },
    }


def build() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "qbsync QuickBooks routes", "version": "1.0.0", "description": _DESCRIPTION},
        "paths": {
            "/oauth/connect": {"get": _connect()},
            "/oauth/callback": {"get": _callback()},
            "/oauth/disconnect": {"post": _disconnect()},
            "/webhooks/qbo": {"post": _webhook()},
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {
                        "error": {"type": "string"},
                        "message": {"type": "string"},
                        "field": {"type": "string"},
                        "kind": {"type": "string"},
                        "suggested_fix": {"type": "string"},
                        "qbo_code": {"type": "string"},
                        "qbo_detail": {"type": "string"},
                    },
                }
            },
            "securitySchemes": {
                "sigv4": {"type": "apiKey", "in": "header", "name": "Authorization", "description": "AWS SigV4"},
                "intuitSignature": {"type": "apiKey", "in": "header", "name": SIGNATURE_HEADER},
            },
        },
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    return write_or_check(DOC_PATH, render(), "shared.domain.quickbooks_openapi", argv)


if __name__ == "__main__":
    raise SystemExit(main())
