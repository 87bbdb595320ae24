"""Builds the QBO client for a realm the way every worker does (tokens from Secrets Manager, shared pacing)."""

from __future__ import annotations

from shared.adapters.qbo.types import QboApi


def default_client_factory(realm_id: str) -> QboApi:
    from shared.adapters.connections import ConnectionRepository
    from shared.adapters.qbo.client import QboClient
    from shared.adapters.qbo.tokens import TokenManager

    # Throttling seen is recorded on the connection so ops see it in connection health.
    return QboClient(realm_id, tokens=TokenManager(), on_throttled=ConnectionRepository().mark_throttled)
