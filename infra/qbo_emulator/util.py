"""Shared helpers: the emulator clock, QBO time formats, money, JSON and fault envelopes."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

try:
    from zoneinfo import ZoneInfo

    PACIFIC: Any = ZoneInfo("America/Los_Angeles")
except Exception:  # pragma: no cover - tzdata missing; QBO reports Pacific time, a fixed offset is close enough
    from datetime import timezone

    PACIFIC = timezone(timedelta(hours=-8))

CENT = Decimal("0.01")


class Clock:
    """Wall clock with an adjustable offset so tests can jump forward (token expiry, rate windows, CDC)."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """Current emulator time as a UNIX timestamp."""
        with self._lock:
            return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move emulator time forward (or back with a negative value)."""
        with self._lock:
            self._offset += seconds

    def reset(self) -> None:
        with self._lock:
            self._offset = 0.0


class QboError(Exception):
    """A QBO data-service fault: HTTP status + one Error element of the Fault envelope."""

    def __init__(
        self,
        code: str,
        message: str,
        detail: str = "",
        *,
        status: int = 400,
        fault_type: str = "ValidationFault",
        element: str = "",
    ) -> None:
        super().__init__(f"{code} {message}: {detail}")
        self.code = code
        self.message = message
        self.detail = detail
        self.status = status
        self.fault_type = fault_type
        self.element = element

    def fault(self) -> dict[str, Any]:
        """The `Fault` object (without the envelope `time`)."""
        return {
            "Error": [{"Message": self.message, "Detail": self.detail, "code": self.code, "element": self.element}],
            "type": self.fault_type,
        }


def not_found(entity: str, ident: str) -> QboError:
    return QboError(
        "610",
        "Object Not Found",
        f"Object Not Found : Something you're trying to use has been made inactive. "
        f"Check the fields with accounts, customers, items, vendors or employees. ({entity} Id={ident})",
    )


def invalid_ref(what: str, ident: Any) -> QboError:
    return QboError(
        "2500",
        "Invalid Reference Id",
        f"Invalid Reference Id : {what} assigned to this transaction has been deleted or is inactive (Id={ident})",
    )


def business(detail: str) -> QboError:
    return QboError("6000", "A business validation error has occurred while processing your request", detail)


def required(field: str) -> QboError:
    return QboError(
        "2020",
        "Required param missing, need to supply the required value for the API",
        f"Required parameter {field} is missing in the request",
        element=field,
    )


def fmt_ts(ts: float, millis: bool = False) -> str:
    """QBO style local (Pacific) timestamp: 2015-08-10T11:33:46-07:00 (MetaData) or with millis (envelope)."""
    dt = datetime.fromtimestamp(ts, tz=PACIFIC)
    if millis:
        base = dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{dt.microsecond // 1000:03d}"
    else:
        base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    off = dt.strftime("%z")
    return f"{base}{off[:3]}:{off[3:]}"


def fmt_utc(ts: float) -> str:
    """UTC timestamp with millis and Z, as webhooks use."""
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{dt.microsecond // 1000:03d}Z"


def today(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=PACIFIC).date().isoformat()


def parse_datetime(value: str) -> datetime | None:
    """Parse an ISO-8601 date or datetime (naive values are taken as Pacific). Returns None if unparsable."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        try:
            d = date.fromisoformat(text)
        except ValueError:
            return None
        dt = datetime(d.year, d.month, d.day)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=PACIFIC)
    return dt


def parse_date(value: Any, field: str) -> date:
    """Parse a YYYY-MM-DD field.

    Raises:
        QboError: 2000-range validation fault when the value is not a date.
    """
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError as exc:
        raise QboError("2070", "Invalid Date", f"{field} must be in YYYY-MM-DD format", element=field) from exc


def money(value: Any, field: str = "Amount") -> Decimal:
    """Convert a JSON number/string to Decimal.

    Raises:
        QboError: 2000-range validation fault when the value is not numeric.
    """
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise QboError("2030", "Invalid ID", f"{field} is not a number", element=field)
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise QboError("2030", "Invalid Number", f"{field}: '{value}' is not a number", element=field) from exc


def round2(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def to_json_value(obj: Any, drop_none: bool = True) -> Any:
    """Deep-convert Decimals into ints/floats so they serialize as JSON numbers (100.5, not "100.50").

    QBO omits properties without a value, hence `drop_none`.
    """
    if isinstance(obj, dict):
        return {k: to_json_value(v, drop_none) for k, v in obj.items() if v is not None or not drop_none}
    if isinstance(obj, list):
        return [to_json_value(v, drop_none) for v in obj]
    if isinstance(obj, Decimal):
        if obj == obj.to_integral_value():
            return int(obj)
        return float(obj)
    return obj


def dumps(obj: Any, drop_none: bool = True) -> str:
    return json.dumps(to_json_value(obj, drop_none), separators=(",", ":"))


def loads(text: str | bytes) -> Any:
    """Parse request JSON keeping money exact (floats become Decimal)."""
    return json.loads(text, parse_float=Decimal)


def new_tid() -> str:
    """An intuit_tid-looking transaction id."""
    return "1-" + uuid.uuid4().hex[:8] + "-" + uuid.uuid4().hex[:24]
