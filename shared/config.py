"""Typed settings, read from the environment once per container. The only module that reads os.environ."""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


class SettingsError(RuntimeError):
    """A required environment variable is missing or malformed (raised at cold start)."""


def _env(name: str, default: Any = dataclasses.MISSING, **bounds: float) -> Any:
    """A setting read from environment variable ``name``, optionally bounded (``ge``, ``gt``, ``le``)."""
    return field(default=default, metadata={"env": name, "bounds": bounds})


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Read by hand, not with pydantic: every function reads its settings at cold start, and most functions have
    no other use for pydantic (see ``shared.domain.plain``)."""

    # Wiring (set by template.yaml; the local stack sets the same names)
    ledger_table: str = _env("LEDGER_TABLE")
    dlq_url: str = _env("DLQ_URL", "")
    callback_queue_url: str = _env("CALLBACK_QUEUE_URL", "")
    secrets_prefix: str = _env("SECRETS_PREFIX", "qbsync")
    oauth_app_secret_id: str = _env("OAUTH_APP_SECRET_ID", "")
    aws_region: str = _env("AWS_REGION", "us-east-1")
    # Endpoint overrides (local stack, tests); botocore applies them itself, qbsync only keys its clients by them.
    aws_endpoint_url: str = _env("AWS_ENDPOINT_URL", "")
    aws_endpoint_url_dynamodb_streams: str = _env("AWS_ENDPOINT_URL_DYNAMODB_STREAMS", "")
    # QuickBooks environment: sandbox | production | local (the emulator). Endpoints follow from it.
    qbo_environment: Literal["sandbox", "production", "local"] = _env("QBO_ENVIRONMENT", "sandbox")
    qbo_base_url: str = _env("QBO_BASE_URL", "")
    qbo_discovery_url: str = _env("QBO_DISCOVERY_URL", "")
    qbo_webhook_verifier_secret_id: str = _env("QBO_WEBHOOK_VERIFIER_SECRET_ID", "")
    oauth_redirect_url: str = _env("OAUTH_REDIRECT_URL", "")
    # Request limits
    max_body_bytes: int = _env("MAX_BODY_BYTES", 262_144)
    signature_tolerance_s: int = _env("SIGNATURE_TOLERANCE_S", 300)
    # QBO pacing per realm (QBO: 500/min, 10 in flight, 40 batch/min). Requests stay under by default; batch calls
    # may use all 40, as the pacer counts each until a minute after it ended (shared/adapters/qbo/pacing.py).
    qbo_rate_per_min: int = _env("QBO_RATE_PER_MIN", 480)
    qbo_max_inflight: int = _env("QBO_MAX_INFLIGHT", 8)
    qbo_batch_per_min: int = _env("QBO_BATCH_PER_MIN", 40)
    qbo_batch_size: int = _env("QBO_BATCH_SIZE", 30)
    qbo_timeout_s: float = _env("QBO_TIMEOUT_S", 30.0)
    # Objects reconciled concurrently per sync-worker invocation; their writes share /batch calls per realm.
    sync_concurrency: int = _env("SYNC_CONCURRENCY", 100, ge=1, le=100)
    # Objects of one realm reconciled per sync-worker invocation; a realm's further objects wait in its queue and
    # are handed back to the stream a share at a time, so one realm's backlog (paced by QBO's limits) cannot hold
    # up the others' records behind it. A parked object the queue has not handed back after SYNC_PARK_TTL_S is
    # taken back by the retry sweep. The share applies only while another realm had records in the container's
    # invocations within SYNC_CONTENTION_WINDOW_S: a realm alone takes all its objects.
    sync_realm_share: int = _env("SYNC_REALM_SHARE", 15, ge=1, le=10_000)
    sync_contention_window_s: float = _env("SYNC_CONTENTION_WINDOW_S", 120.0, ge=0, le=3600)
    sync_park_ttl_s: int = _env("SYNC_PARK_TTL_S", 900, ge=60, le=86_400)
    # A realm's queue is handed back a share per invocation that has the realm's records. When the queue has handed
    # nothing back for this long (the records that would have carried it on never came: they were duplicates, or an
    # invocation was cut short, or they were parked too), the retry sweep hands a share back, starting it again.
    sync_park_stall_s: float = _env("SYNC_PARK_STALL_S", 60.0, ge=1, le=3600)
    # A retrying object waits base, 2x base, 4x base ... seconds (at most 15 minutes) before the sweep wakes it.
    retry_base_s: float = _env("RETRY_BASE_S", 5.0, gt=0, le=300)
    # Observability
    tracing_enabled: bool = _env("QBSYNC_TRACING", False)
    ops_local_key: str = _env("OPS_LOCAL_KEY", "")

    @property
    def qbo_api_base(self) -> str:
        if self.qbo_base_url:
            return self.qbo_base_url.rstrip("/")
        if self.qbo_environment == "production":
            return "https://quickbooks.api.intuit.com"
        return "https://sandbox-quickbooks.api.intuit.com"

    @classmethod
    def from_env(cls, environ: Mapping[str, Any]) -> Settings:
        """Settings from environment variables. Raises SettingsError naming each missing or invalid one."""
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        bad: list[str] = []
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            if name not in environ:
                if f.default is dataclasses.MISSING:
                    bad.append(name)
                continue
            try:
                values[f.name] = _parse(hints[f.name], str(environ[name]), f.metadata["bounds"])
            except ValueError:
                bad.append(name)
        if bad:
            raise SettingsError(f"qbsync settings invalid or missing: {', '.join(bad)}")
        return cls(**values)


def _parse(kind: Any, raw: str, bounds: Mapping[str, float]) -> Any:
    if typing.get_origin(kind) is Literal:
        if raw not in typing.get_args(kind):
            raise ValueError(raw)
        return raw
    if kind is bool:
        if raw.lower() not in _TRUE | _FALSE:
            raise ValueError(raw)
        return raw.lower() in _TRUE
    value = kind(raw)  # str, int or float; int("1.5") and float("x") raise ValueError
    if ("ge" in bounds and value < bounds["ge"]) or ("gt" in bounds and value <= bounds["gt"]):
        raise ValueError(raw)
    if "le" in bounds and value > bounds["le"]:
        raise ValueError(raw)
    return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read settings once. Raises SettingsError naming the missing/invalid variables."""
    return Settings.from_env(os.environ)


def reset_settings_cache() -> None:
    """For tests and the local stack, which change the environment between runs."""
    get_settings.cache_clear()
