"""Logger / Metrics / Tracer, created once per container.

Tracer imports aws_xray_sdk (~0.5 s of cold start), so it is only created when QBSYNC_TRACING is on;
otherwise a no-op stand-in with the same decorator surface is returned.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Protocol, TypeVar, cast

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from shared.config import get_settings

F = TypeVar("F", bound=Callable[..., Any])

# Keys whose values never reach a log line (tokens, codes, signatures, secrets, PHI).
REDACTED_KEYS = frozenset(
    {
        "access_token",
        "refresh_token",
        "id_token",
        "code",
        "state",
        "client_secret",
        "authorization",
        "signature",
        "x-qbsync-signature",
        "intuit-signature",
        "secret",
        "signing_secret",
        "verifier_token",
        "first_name",
        "last_name",
        "email",
        "phone",
        "date_of_birth",
        "diagnosis_codes",
        "notes",
        "clinical_notes",
        "insurance_member_id",
        "address",
    }
)


@lru_cache(maxsize=1)
def logger() -> Logger:
    return Logger(service="qbsync", json_default=str)


@lru_cache(maxsize=1)
def metrics() -> Metrics:
    return Metrics(namespace="qbsync", service="qbsync")


def count(name: str, value: float = 1, **dims: str) -> None:
    """One metric per business outcome (EMF). Dimensions kept low-cardinality on purpose."""
    m = metrics()
    if dims:
        # Dimensioned metrics go out as their own EMF blob so they don't leak onto other metrics.
        with single_metric(
            name=name, unit=MetricUnit.Count, value=value, namespace="qbsync", default_dimensions=m.default_dimensions
        ) as sm:
            for k, v in dims.items():
                sm.add_dimension(name=k, value=v)
        return
    m.add_metric(name=name, unit=MetricUnit.Count, value=value)


class TracerLike(Protocol):
    def capture_lambda_handler(self, fn: F) -> F: ...

    def capture_method(self, fn: F) -> F: ...


class _NoTracer:
    def capture_lambda_handler(self, fn: F) -> F:
        return fn

    def capture_method(self, fn: F) -> F:
        return fn


@lru_cache(maxsize=1)
def tracer() -> TracerLike:
    if get_settings().tracing_enabled:
        from aws_lambda_powertools import Tracer

        return cast(TracerLike, Tracer(service="qbsync"))
    return _NoTracer()


def log_unhandled(exc: Exception, metric: str) -> None:
    """An unexpected error on a request path: counted, logged with its type and stack only (an exception's
    message could echo a payload, and payloads may carry PHI or tokens)."""
    count(metric)
    logger().error(
        "unhandled error", extra={"error_type": type(exc).__name__, "stack": traceback.format_tb(exc.__traceback__)}
    )


def redact(value: Any) -> Any:
    """Deep copy of ``value`` with sensitive keys replaced, for logging payloads safely."""
    if isinstance(value, dict):
        return {k: ("***" if str(k).lower() in REDACTED_KEYS else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
