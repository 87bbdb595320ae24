"""Typed settings, read from the environment once per container. The only module that reads os.environ."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, Field, ValidationError


class SettingsError(RuntimeError):
    """A required environment variable is missing or malformed (raised at cold start)."""


class Settings(BaseModel):
    # Wiring (set by template.yaml; the local stack sets the same names)
    ledger_table: str = Field(alias="LEDGER_TABLE")
    dlq_url: str = Field(default="", alias="DLQ_URL")
    callback_queue_url: str = Field(default="", alias="CALLBACK_QUEUE_URL")
    secrets_prefix: str = Field(default="qbsync", alias="SECRETS_PREFIX")
    oauth_app_secret_id: str = Field(default="", alias="OAUTH_APP_SECRET_ID")
    aws_region: str = Field(default="us-east-1", alias="AWS_REGION")
    # Endpoint overrides (local stack, tests); botocore applies them itself, qbsync only keys its clients by them.
    aws_endpoint_url: str = Field(default="", alias="AWS_ENDPOINT_URL")
    aws_endpoint_url_dynamodb_streams: str = Field(default="", alias="AWS_ENDPOINT_URL_DYNAMODB_STREAMS")
    # QuickBooks environment: sandbox | production | local (the emulator). Endpoints follow from it.
    qbo_environment: Literal["sandbox", "production", "local"] = Field(default="sandbox", alias="QBO_ENVIRONMENT")
    qbo_base_url: str = Field(default="", alias="QBO_BASE_URL")
    qbo_discovery_url: str = Field(default="", alias="QBO_DISCOVERY_URL")
    qbo_webhook_verifier_secret_id: str = Field(default="", alias="QBO_WEBHOOK_VERIFIER_SECRET_ID")
    oauth_redirect_url: str = Field(default="", alias="OAUTH_REDIRECT_URL")
    # Request limits
    max_body_bytes: int = Field(default=262_144, alias="MAX_BODY_BYTES")
    signature_tolerance_s: int = Field(default=300, alias="SIGNATURE_TOLERANCE_S")
    # QBO pacing per realm (QBO: 500/min, 10 in flight, 40 batch/min); we stay under by default.
    qbo_rate_per_min: int = Field(default=480, alias="QBO_RATE_PER_MIN")
    qbo_max_inflight: int = Field(default=8, alias="QBO_MAX_INFLIGHT")
    qbo_batch_per_min: int = Field(default=38, alias="QBO_BATCH_PER_MIN")
    qbo_batch_size: int = Field(default=30, alias="QBO_BATCH_SIZE")
    qbo_timeout_s: float = Field(default=30.0, alias="QBO_TIMEOUT_S")
    # Objects reconciled concurrently per sync-worker invocation; their writes share /batch calls per realm.
    sync_concurrency: int = Field(default=64, ge=1, le=100, alias="SYNC_CONCURRENCY")
    # Objects of one realm reconciled per sync-worker invocation; a realm's further objects wait in its queue and
    # are handed back to the stream a share at a time, so one realm's backlog (paced by QBO's limits) cannot hold
    # up the others' records behind it. A parked object the queue has not handed back after SYNC_PARK_TTL_S is
    # taken back by the retry sweep. The share applies only while another realm had records in the container's
    # invocations within SYNC_CONTENTION_WINDOW_S: a realm alone takes all its objects.
    sync_realm_share: int = Field(default=30, ge=1, le=10_000, alias="SYNC_REALM_SHARE")
    sync_contention_window_s: float = Field(default=30.0, ge=0, le=3600, alias="SYNC_CONTENTION_WINDOW_S")
    sync_park_ttl_s: int = Field(default=900, ge=60, le=86_400, alias="SYNC_PARK_TTL_S")
    # A retrying object waits base, 2x base, 4x base ... seconds (at most 15 minutes) before the sweep wakes it.
    retry_base_s: float = Field(default=5.0, gt=0, le=300, alias="RETRY_BASE_S")
    # Observability
    tracing_enabled: bool = Field(default=False, alias="QBSYNC_TRACING")
    ops_local_key: str = Field(default="", alias="OPS_LOCAL_KEY")

    model_config = {"populate_by_name": True, "frozen": True}

    @property
    def qbo_api_base(self) -> str:
        if self.qbo_base_url:
            return self.qbo_base_url.rstrip("/")
        if self.qbo_environment == "production":
            return "https://quickbooks.api.intuit.com"
        return "https://sandbox-quickbooks.api.intuit.com"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read settings once. Raises SettingsError naming the missing/invalid variables."""
    try:
        return Settings.model_validate(dict(os.environ))
    except ValidationError as exc:
        names = ", ".join(str(e["loc"][0]) for e in exc.errors())
        raise SettingsError(f"qbsync settings invalid or missing: {names}") from exc


def reset_settings_cache() -> None:
    """For tests and the local stack, which change the environment between runs."""
    get_settings.cache_clear()
