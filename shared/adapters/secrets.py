"""Secrets Manager: tenant signing secrets, per-realm QBO tokens, app credentials. Values are JSON objects."""

from __future__ import annotations

import json
import time
from typing import Any

from botocore.exceptions import ClientError

from shared.adapters import aws
from shared.config import get_settings


def _client() -> Any:
    return aws.client("secretsmanager")


def reset_client() -> None:
    aws.reset()
    _cache.clear()


_cache: dict[str, tuple[float, dict[str, Any]]] = {}


def secret_name(*parts: str) -> str:
    """``{prefix}/tenants/{id}/signing``-style names; IAM grants by these prefixes (template.yaml)."""
    return "/".join((get_settings().secrets_prefix, *parts))


def get_json(secret_id: str, *, max_age_s: float = 60.0) -> dict[str, Any]:
    """The secret's current JSON value, cached per container for ``max_age_s``.

    Raises KeyError if the secret does not exist.
    """
    hit = _cache.get(secret_id)
    now = time.monotonic()
    if hit and now - hit[0] < max_age_s:
        return hit[1]
    try:
        # VersionStage explicit: moto returns a stale value without it after a stage move.
        raw = _client().get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")["SecretString"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            raise KeyError(secret_id) from exc
        raise
    value: dict[str, Any] = json.loads(raw)
    _cache[secret_id] = (now, value)
    return value


def put_json(secret_id: str, value: dict[str, Any], *, description: str = "") -> None:
    """Create the secret or store a new current version of it."""
    body = json.dumps(value, separators=(",", ":"))
    try:
        _client().put_secret_value(SecretId=secret_id, SecretString=body)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        _client().create_secret(Name=secret_id, SecretString=body, Description=description)
    _cache[secret_id] = (time.monotonic(), value)


def forget(secret_id: str) -> None:
    _cache.pop(secret_id, None)
