"""QboClient: the QBO Accounting API v3 over ``requests``, implementing ``QboApi`` (types.py).

Every call: ``{api_base}/v3/company/{realm}/...?minorversion=75``, JSON in and out (``/query`` takes the
statement as ``application/text``), paced per realm (pacing.py) so throttling is prevented, not retried.
Writes carry the caller's deterministic ``requestid``; a 401 refreshes the access token once and
retries once with the SAME requestid. Faults become ``QboFault`` subclasses (faults.classify); a write
whose outcome is unknown (read timeout, connection reset, 5xx) is ``QboRetryable(uncertain=True)`` so the
sync engine reads back before re-creating.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

import requests
from urllib3.exceptions import NewConnectionError

from shared.adapters.qbo.faults import QboPermanent, QboRetryable, QboThrottled, classify
from shared.adapters.qbo.types import PAGE_SIZE, BatchOp, BatchResult, CallStats
from shared.config import Settings, get_settings
from shared.observability import count, logger

if TYPE_CHECKING:
    from shared.adapters.qbo.pacing import Pacer

MINOR_VERSION = "75"
MAX_REQUEST_ID = 50
MAX_BATCH_REQUEST_ID = 36
MAX_BID = 10
CONNECT_TIMEOUT_S = 5.0

# Void differs per entity (qbo-api.md §4.3). CreditMemo cannot be voided through the API.
_VOID_PARAMS: dict[str, dict[str, str]] = {
    "invoice": {"operation": "void"},
    "payment": {"operation": "update", "include": "void"},
    "salesreceipt": {"operation": "update", "include": "void"},
}
_PAGING = re.compile(r"\b(STARTPOSITION|MAXRESULTS)\b", re.IGNORECASE)
_COUNT = re.compile(r"^\s*select\s+count\s*\(", re.IGNORECASE)
_XML_CODE = re.compile(r"""<Error[^>]*\bcode=["']?(\d+)""", re.IGNORECASE)
_XML_MESSAGE = re.compile(r"<Message>(.*?)</Message>", re.IGNORECASE | re.DOTALL)
_XML_DETAIL = re.compile(r"<Detail>(.*?)</Detail>", re.IGNORECASE | re.DOTALL)

Kind = Literal["request", "batch"]


class AccessTokens(Protocol):
    """Where the client gets bearer tokens (``shared.adapters.qbo.tokens.TokenManager``)."""

    def access_token(self, realm_id: str) -> str:
        """A valid access token. Raises QboReconnect when the connection needs a reconnect."""
        ...

    def refresh_after_401(self, realm_id: str, rejected: str) -> str:
        """A new access token after QBO rejected ``rejected`` (refreshes unless someone already did)."""
        ...


class QboClient:
    """One realm's QBO API. Thread-safe for concurrent calls except ``stats`` (counters, best effort)."""

    def __init__(
        self,
        realm_id: str,
        *,
        tokens: AccessTokens,
        pacer: Pacer | None = None,
        settings: Settings | None = None,
        session: requests.Session | None = None,
        on_throttled: Callable[[str], None] | None = None,
    ) -> None:
        self.realm_id = realm_id
        self.stats = CallStats()
        self._tokens = tokens
        self._settings = settings or get_settings()
        if pacer is None:
            from shared.adapters.qbo.pacing import pacer_for

            pacer = pacer_for(realm_id)
        self._pacer = pacer
        self._session = session or requests.Session()
        self._on_throttled = on_throttled
        self._base = f"{self._settings.qbo_api_base}/v3/company/{realm_id}"

    # ------------------------------------------------------------------ writes
    def create(self, entity: str, body: dict[str, Any], *, request_id: str) -> dict[str, Any]:
        """Create an entity. Raises QboFault (QboRetryable with uncertain=True when it may have committed)."""
        resp = self._call("POST", entity.lower(), json_body=body, write=True, request_id=request_id)
        return _unwrap(resp, entity)

    def update(self, entity: str, body: dict[str, Any], *, request_id: str, sparse: bool = True) -> dict[str, Any]:
        """Full or sparse update (``body`` carries Id + SyncToken). Raises QboFault (QboStale on 5010)."""
        payload = {**body, "sparse": True} if sparse else {k: v for k, v in body.items() if k != "sparse"}
        resp = self._call("POST", entity.lower(), json_body=payload, write=True, request_id=request_id)
        return _unwrap(resp, entity)

    def delete(self, entity: str, qbo_id: str, sync_token: str, *, request_id: str) -> dict[str, Any]:
        """``POST /{entity}?operation=delete``; returns the stub ``{"status": "Deleted", "Id": ...}``."""
        resp = self._call(
            "POST",
            entity.lower(),
            params={"operation": "delete"},
            json_body={"Id": qbo_id, "SyncToken": sync_token},
            write=True,
            request_id=request_id,
        )
        return _unwrap(resp, entity)

    def void(self, entity: str, qbo_id: str, sync_token: str, *, request_id: str) -> dict[str, Any]:
        """Void per qbo-api.md §4.3: invoice ``operation=void``; payment / sales receipt
        ``operation=update&include=void`` (sparse). Raises QboPermanent for entities QBO cannot void via
        the API (CreditMemo: delete instead)."""
        params = _VOID_PARAMS.get(entity.lower())
        if params is None:
            raise QboPermanent(
                f"{entity} cannot be voided through the QuickBooks API",
                code="void-unsupported",
                detail="Delete it instead, or void it in QuickBooks.",
            )
        body: dict[str, Any] = {"Id": qbo_id, "SyncToken": sync_token}
        if params.get("operation") == "update":
            body["sparse"] = True
        resp = self._call("POST", entity.lower(), params=params, json_body=body, write=True, request_id=request_id)
        return _unwrap(resp, entity)

    # ------------------------------------------------------------------ reads
    def read(self, entity: str, qbo_id: str) -> dict[str, Any]:
        """Read by Id. Raises QboNotFound (404 / 610) when it does not exist."""
        return _unwrap(self._call("GET", f"{entity.lower()}/{qbo_id}"), entity)

    def query(self, statement: str, *, max_pages: int = 10, start: int = 1) -> list[dict[str, Any]]:
        """Run a query, paging ``STARTPOSITION``/``MAXRESULTS 1000`` from row ``start`` until a short page (or
        ``max_pages``).

        A statement that pages itself, or ``SELECT COUNT(*)`` (returned as ``[{"totalCount": n}]``), is one
        call. Raises QboFault.
        """
        if _COUNT.match(statement):
            qr = self._query_page(statement)
            return [{"totalCount": int(qr.get("totalCount", 0))}]
        if _PAGING.search(statement):
            return _rows(self._query_page(statement))
        out: list[dict[str, Any]] = []
        for page in range(max_pages):
            paged = f"{statement} STARTPOSITION {start + page * PAGE_SIZE} MAXRESULTS {PAGE_SIZE}"
            rows = _rows(self._query_page(paged))
            out.extend(rows)
            if len(rows) < PAGE_SIZE:
                return out
        logger().warning("qbo query truncated at max_pages", extra={"realm_id": self.realm_id, "pages": max_pages})
        return out

    def _query_page(self, statement: str) -> dict[str, Any]:
        resp = self._call("POST", "query", data=statement.encode("utf-8"), content_type="application/text")
        qr: dict[str, Any] = resp.get("QueryResponse") or {}
        return qr

    def cdc(self, entities: list[str], changed_since: datetime) -> dict[str, list[dict[str, Any]]]:
        """Changed objects per entity type since ``changed_since`` (≤ 30 days; deleted ones carry
        ``status: Deleted``). Raises QboFault."""
        resp = self._call(
            "GET", "cdc", params={"entities": ",".join(entities), "changedSince": changed_since.isoformat()}
        )
        out: dict[str, list[dict[str, Any]]] = {e: [] for e in entities}
        for cdc in resp.get("CDCResponse") or []:
            for qr in cdc.get("QueryResponse") or []:
                for key, value in qr.items():
                    if isinstance(value, list):
                        out.setdefault(key, []).extend(value)
        return out

    def company_info(self) -> dict[str, Any]:
        return _unwrap(self._call("GET", f"companyinfo/{self.realm_id}"), "CompanyInfo")

    def preferences(self) -> dict[str, Any]:
        return _unwrap(self._call("GET", "preferences"), "Preferences")

    # ------------------------------------------------------------------ batch
    def batch(self, ops: list[BatchOp], *, request_id: str | None = None) -> list[BatchResult]:
        """Run ops through ``/batch`` in chunks of ``qbo_batch_size``; results in the order of ``ops``,
        matched by ``bId``. Per-item faults land in ``BatchResult.fault``; a whole-call failure raises
        QboFault. With a ``request_id`` (≤ 36 chars) each ``bid`` must be ≤ 10 chars."""
        bids = [op.bid for op in ops]
        if len(set(bids)) != len(bids):
            raise ValueError("batch bIds must be unique within a call")
        if request_id is not None:
            _check_request_id(request_id, MAX_BATCH_REQUEST_ID)
            if any(len(b) > MAX_BID for b in bids):
                raise ValueError(f"batch bIds must be <= {MAX_BID} chars when a request id is used")
        size = max(1, self._settings.qbo_batch_size)
        chunks = [ops[i : i + size] for i in range(0, len(ops), size)]
        results: list[BatchResult] = []
        for n, chunk in enumerate(chunks):
            rid = request_id
            if request_id is not None and len(chunks) > 1:
                # Deterministic per chunk, so a retry of the whole call replays chunk by chunk.
                rid = hashlib.sha256(f"{request_id}#{n}".encode()).hexdigest()[:MAX_BATCH_REQUEST_ID]
            results.extend(self._batch_chunk(chunk, rid))
        return results

    def _batch_chunk(self, ops: list[BatchOp], request_id: str | None) -> list[BatchResult]:
        items = [_batch_item(op) for op in ops]
        writes = any(op.operation != "query" for op in ops)
        resp = self._call(
            "POST",
            "batch",
            json_body={"BatchItemRequest": items},
            write=writes,
            request_id=request_id,
            kind="batch",
        )
        self.stats.batch_items += len(ops)
        by_bid = {str(r.get("bId")): r for r in resp.get("BatchItemResponse") or []}
        out: list[BatchResult] = []
        for op in ops:
            item = by_bid.get(op.bid)
            if item is None:
                missing = QboRetryable(
                    "QuickBooks returned no result for this batch item",
                    code="batch-missing",
                    uncertain=op.operation != "query",
                )
                out.append(BatchResult(bid=op.bid, fault=missing))
            elif "Fault" in item or "fault" in item:
                errors = _errors(item.get("Fault") or item.get("fault"))
                out.append(BatchResult(bid=op.bid, fault=classify(400, errors)))
            elif "QueryResponse" in item:
                out.append(BatchResult(bid=op.bid, rows=_rows(item["QueryResponse"] or {})))
            else:
                out.append(BatchResult(bid=op.bid, entity=_unwrap(item, op.entity, strict=False)))
        return out

    # ------------------------------------------------------------------ transport
    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json_body: Any = None,
        data: bytes | None = None,
        content_type: str = "application/json",
        write: bool = False,
        request_id: str | None = None,
        kind: Kind = "request",
    ) -> dict[str, Any]:
        query = {**(params or {}), "minorversion": MINOR_VERSION}
        if write:
            if request_id is None:
                raise ValueError("a write needs a request_id")
            if kind == "request":
                _check_request_id(request_id, MAX_REQUEST_ID)
        if request_id is not None:
            query["requestid"] = request_id
        url = f"{self._base}/{path}"
        if kind == "batch":
            self.stats.batches += 1
        elif write:
            self.stats.writes += 1
        else:
            self.stats.reads += 1
        token = self._tokens.access_token(self.realm_id)
        # One retry after a 401, with the same URL (so the same requestid) and a refreshed token.
        for attempt in (1, 2):
            resp = self._send(
                method=method,
                url=url,
                query=query,
                json_body=json_body,
                data=data,
                content_type=content_type,
                token=token,
                write=write,
                kind=kind,
            )
            if resp.status_code == 401 and attempt == 1:
                self.stats.retries_401 += 1
                logger().info("qbo 401, refreshing token once", extra={"realm_id": self.realm_id, "path": path})
                token = self._tokens.refresh_after_401(self.realm_id, token)
                continue
            return self._parse(resp, write=write, path=path)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(
        self,
        *,
        method: str,
        url: str,
        query: dict[str, str],
        json_body: Any,
        data: bytes | None,
        content_type: str,
        token: str,
        write: bool,
        kind: Kind,
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if method == "POST":
            headers["Content-Type"] = content_type
        started = time.monotonic()
        try:
            with self._pacer.acquire(kind):
                self.stats.http_calls += 1
                if kind == "batch":
                    self.stats.batch_started_at = time.monotonic()
                return self._session.request(
                    method,
                    url,
                    params=query,
                    json=json_body if data is None else None,
                    data=data,
                    headers=headers,
                    timeout=(CONNECT_TIMEOUT_S, self._settings.qbo_timeout_s),
                )
        except requests.ConnectTimeout as exc:
            raise QboRetryable("QuickBooks could not be reached (connect timeout)", code="timeout") from exc
        except requests.Timeout as exc:
            raise QboRetryable(
                f"QuickBooks did not answer within {self._settings.qbo_timeout_s:g} s",
                code="timeout",
                uncertain=write,
            ) from exc
        except requests.ConnectionError as exc:
            sent = not _never_connected(exc)
            raise QboRetryable(
                "connection to QuickBooks failed" + (" after the request was sent" if sent else ""),
                code="connection",
                uncertain=write and sent,
            ) from exc
        finally:
            logger().debug(
                "qbo call",
                extra={
                    "realm_id": self.realm_id,
                    "method": method,
                    "path": url.removeprefix(self._base),
                    "ms": round((time.monotonic() - started) * 1000),
                },
            )

    def _parse(self, resp: requests.Response, *, write: bool, path: str) -> dict[str, Any]:
        tid = resp.headers.get("intuit_tid", "")
        try:
            body = resp.json()
        except ValueError:
            body = None
        fault_body = None
        if isinstance(body, dict):
            fault_body = body.get("Fault") or body.get("fault")
        if resp.status_code == 200 and isinstance(body, dict) and not fault_body:
            return body
        if fault_body is not None:
            errors = _errors(fault_body)
        elif body is None:
            errors = _xml_errors(resp.text)
        else:
            errors = []
        if body is None and resp.status_code == 403 and "ThrottleExceeded" in resp.text:
            errors = errors or [{"code": "3001", "Message": "ThrottleExceeded"}]
        status = resp.status_code if resp.status_code != 200 else 400
        fault = classify(status, errors, tid)
        fault.uncertain = fault.uncertain and write
        if isinstance(fault, QboThrottled):
            self.stats.throttled += 1
            count("QboThrottled")  # ThrottlingAlarm: pacing should make this never happen
            if self._on_throttled is not None:
                self._on_throttled(self.realm_id)
        logger().warning(
            "qbo fault",
            extra={
                "realm_id": self.realm_id,
                "path": path,
                "http_status": resp.status_code,
                "qbo_code": fault.code,
                "fault": type(fault).__name__,
                "intuit_tid": tid,
                "uncertain": fault.uncertain,
            },
        )
        raise fault


# ---------------------------------------------------------------------- helpers
def _check_request_id(request_id: str, limit: int) -> None:
    if not request_id or len(request_id) > limit:
        raise ValueError(f"requestid must be 1..{limit} chars (got {len(request_id)})")


def _never_connected(exc: requests.ConnectionError) -> bool:
    """True when the connection was never established (nothing was sent): DNS failure, refused."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        cur = todo.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, NewConnectionError | ConnectionRefusedError):
            return True
        todo.extend([getattr(cur, "reason", None), cur.__cause__, cur.__context__])
        todo.extend(a for a in cur.args if isinstance(a, BaseException))
    return False


def _errors(fault: Any) -> list[dict[str, Any]]:
    """``Fault.Error`` list from either shape (data-service ``Fault/Error`` or gateway ``fault/error``)."""
    if not isinstance(fault, dict):
        return []
    errs = fault.get("Error") or fault.get("error") or []
    if isinstance(errs, dict):
        errs = [errs]
    return [e for e in errs if isinstance(e, dict)]


def _xml_errors(text: str) -> list[dict[str, Any]]:
    """Throttle faults have come back as XML even when JSON was asked for (qbo-api.md §1.4)."""
    code = _XML_CODE.search(text or "")
    if not code:
        return []
    msg = _XML_MESSAGE.search(text)
    detail = _XML_DETAIL.search(text)
    return [
        {
            "code": code.group(1),
            "Message": msg.group(1).strip() if msg else "",
            "Detail": detail.group(1).strip() if detail else "",
        }
    ]


def _unwrap(resp: dict[str, Any], entity: str, *, strict: bool = True) -> dict[str, Any]:
    """The entity object from ``{"Invoice": {...}, "time": ...}`` (key matched case-insensitively)."""
    value = resp.get(entity)
    if value is None:
        lower = entity.lower()
        value = next((v for k, v in resp.items() if k.lower() == lower), None)
    if isinstance(value, dict):
        return value
    if strict:
        raise QboRetryable(f"unexpected QuickBooks response: no {entity} in it", code="bad-response")
    return {}


def _rows(query_response: dict[str, Any]) -> list[dict[str, Any]]:
    for key, value in query_response.items():
        if isinstance(value, list) and key not in {"startPosition", "maxResults"}:
            return [v for v in value if isinstance(v, dict)]
    return []


def _batch_item(op: BatchOp) -> dict[str, Any]:
    if op.operation == "query":
        return {"bId": op.bid, "Query": op.body.get("query", "")}
    body = dict(op.body)
    item: dict[str, Any] = {"bId": op.bid}
    if op.operation == "void":
        # Batch void is update + optionsData=void for every voidable type (qbo-api.md §4.3, §7).
        item["operation"] = "update"
        item["optionsData"] = "void"
        body.setdefault("sparse", True)
    else:
        item["operation"] = op.operation
        if op.operation == "update":
            body.setdefault("sparse", True)
    item[op.entity] = body
    return item
