"""Schedule → CDC sweep of every linked realm: missed changes become notices; drift report per realm. Glue only."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from shared.observability import count, logger, metrics, tracer
from shared.services.qbo_changes import CdcSweep
from shared.services.qbo_factory import default_client_factory


@lru_cache(maxsize=1)
def sweep() -> CdcSweep:
    return CdcSweep(default_client_factory)


@logger().inject_lambda_context(clear_state=True)
@metrics().log_metrics
@tracer().capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    reports = sweep().run()
    count("CdcRealmsSwept", len(reports))
    logger().info(
        "cdc sweep", extra={r: {"changes": v["changes"], "drift": len(v["drift"])} for r, v in reports.items()}
    )
    return {"realms": reports}
