"""The result of reconciling one object (shared by the sync engine and its money reconcilers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Outcome:
    """synced, skipped (rule named), waiting (prerequisite named), held, retrying or failed."""

    status: str
    reason: str | None = None
    waiting_on: str | None = None
    error: dict[str, Any] | None = None
