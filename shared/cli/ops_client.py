"""HTTP client of the ops API for the CLI: finds the API (``--api-url`` / ``QBSYNC_API_URL``) and
authenticates — SigV4 (botocore's SigV4Auth, service ``execute-api``) with your AWS credentials, or the local
stack's key from ``QBSYNC_OPS_KEY`` (header ``X-Qbsync-Ops-Key``)."""

from __future__ import annotations

import json
import os
import re
from typing import Any
from urllib.parse import quote, urlencode

import click
import requests


class OpsApiError(click.ClickException):
    def __init__(self, status: int, body: Any) -> None:
        msg = body.get("message") if isinstance(body, dict) else str(body)
        field = body.get("field") if isinstance(body, dict) else None
        super().__init__(f"{status}: {msg}" + (f" (field: {field})" if field else ""))
        self.status = status
        self.body = body


class OpsClient:
    def __init__(self, api_url: str | None = None, ops_key: str | None = None, actor: str | None = None) -> None:
        url = api_url or os.environ.get("QBSYNC_API_URL")
        if not url:
            raise click.UsageError("give --api-url or set QBSYNC_API_URL (the stack output ApiUrl)")
        self.base = url.rstrip("/")
        self.ops_key = ops_key if ops_key is not None else os.environ.get("QBSYNC_OPS_KEY")
        self.actor = actor or os.environ.get("QBSYNC_ACTOR") or os.environ.get("USER") or "cli"
        self.session = requests.Session()

    def call(self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None) -> Any:
        q = {k: v for k, v in (query or {}).items() if v not in (None, "")}
        url = self.base + path + (f"?{urlencode(q)}" if q else "")
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.ops_key:
            headers.update({"X-Qbsync-Ops-Key": self.ops_key, "X-Qbsync-Actor": self.actor})
        else:
            headers.update(_sigv4(method, url, data, headers))
        resp = self.session.request(method, url, data=data, headers=headers, timeout=60)
        try:
            doc = resp.json()
        except ValueError:
            doc = {"message": resp.text[:300]}
        if resp.status_code >= 400:
            raise OpsApiError(resp.status_code, doc)
        return doc


def seg(value: str) -> str:
    """A path segment (object keys contain ':')."""
    return quote(value, safe=":@")


def _sigv4(method: str, url: str, data: bytes | None, headers: dict[str, str]) -> dict[str, str]:
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    session = boto3.Session()
    creds = session.get_credentials()
    if creds is None:
        raise click.UsageError("no AWS credentials for SigV4 (or set QBSYNC_OPS_KEY for the local stack)")
    match = re.search(r"execute-api\.([a-z0-9-]+)\.amazonaws", url)
    region = match.group(1) if match else (session.region_name or "us-east-1")
    request = AWSRequest(method=method, url=url, data=data, headers=dict(headers))
    SigV4Auth(creds.get_frozen_credentials(), "execute-api", region).add_auth(request)
    return dict(request.headers.items())
