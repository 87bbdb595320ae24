"""boto3 clients, created once per container and per endpoint.

Clients are cached (creating one costs ~100 ms of cold start), keyed by service, region and endpoint override:
a process whose endpoint changes (the local stack restarted, a test switching between moto and a local stack)
gets a fresh client instead of one pointing at a server that is gone.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3

from shared.config import get_settings

_clients: dict[tuple[str, ...], Any] = {}
_lock = threading.Lock()


def client(service: str) -> Any:
    s = get_settings()
    key = (service, s.aws_region, s.aws_endpoint_url, s.aws_endpoint_url_dynamodb_streams)
    found = _clients.get(key)
    if found is None:
        with _lock:  # boto3's default session is not thread-safe for client creation
            found = _clients.get(key) or boto3.client(service, region_name=s.aws_region)  # type: ignore[call-overload]
            _clients[key] = found
    return found


def reset() -> None:
    """Forget every client (tests, and the local stack when it restarts)."""
    with _lock:
        _clients.clear()
