"""AWS clients, created once per container and per endpoint, from botocore directly.

The functions use low-level clients only (Secrets Manager, SQS, DynamoDB Streams; pynamodb brings its own), which
is all ``boto3.client`` makes too: boto3's own additions are resources and S3 transfers. Importing boto3 would load
s3transfer and multiprocessing on every cold start for nothing (about 12 ms of a bare ``import boto3``'s 89 ms
here).

Clients are cached (creating one costs ~100 ms of cold start), keyed by service, region and endpoint override:
a process whose endpoint changes (the local stack restarted, a test switching between moto and a local stack)
gets a fresh client instead of one pointing at a server that is gone. Endpoints, credentials and retries come
from the environment and AWS config as for boto3 (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_<SERVICE>``...).
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

import botocore.session

from shared.config import get_settings

_clients: dict[tuple[str, ...], Any] = {}
_lock = threading.Lock()


@lru_cache(maxsize=1)
def _session() -> botocore.session.Session:
    return botocore.session.get_session()


def client(service: str) -> Any:
    s = get_settings()
    key = (service, s.aws_region, s.aws_endpoint_url, s.aws_endpoint_url_dynamodb_streams)
    found = _clients.get(key)
    if found is None:
        with _lock:  # a botocore session is not thread-safe for client creation
            found = _clients.get(key)
            if found is None:
                found = _clients[key] = _session().create_client(service, region_name=s.aws_region)
    return found


def reset() -> None:
    """Forget every client and the session (tests, and the local stack when it restarts)."""
    with _lock:
        _clients.clear()
        _session.cache_clear()
