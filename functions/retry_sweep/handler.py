"""Scheduled: wake objects whose retry backoff has passed, waiting objects left behind, and held work of
realms that are connected again."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.observability import logger, metrics
from shared.services.sweeps import retry_sweep


@logger().inject_lambda_context(clear_state=True)
@metrics().log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return retry_sweep()
