"""Emulated AWS on 127.0.0.1 and creation of the template's resources in it.

DynamoDB Local (Java) serves DynamoDB and DynamoDB Streams because it matches AWS where moto does not (no
stream record for a no-op write, TTL expiry with REMOVE records). moto's ThreadedMotoServer serves SQS,
Secrets Manager, SSM and CloudWatch, and DynamoDB too when Java or the jar is missing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from infra.local.template import QueueSpec, Resolver, TableSpec, TemplateModel

log = logging.getLogger("qbsync.local")

ACCOUNT_ID = "123456789012"  # moto's default account
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
DDB_LOCAL_RELATIVE = Path(".local/ddb/node_modules/amplify-dynamodb-simulator/emulator/DynamoDBLocal.jar")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listens(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds a listening TCP socket on ``port`` (Linux ``/proc``; None elsewhere)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
        inodes = set()
        for fd in fds:
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as f:
                for line in f.readlines()[1:]:
                    cols = line.split()
                    if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port and cols[9] in inodes:
                        return True
    except OSError:
        return None
    return False


def client(service: str, endpoint: str, region: str) -> Any:
    return boto3.session.Session().client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 2, "mode": "standard"}, account_id_endpoint_mode="disabled"),
    )


class MotoServer:
    def __init__(self) -> None:
        self.url = ""
        self._server: Any = None

    def start(self) -> MotoServer:
        from moto.server import ThreadedMotoServer

        port = free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._server.start()
        self.url = f"http://127.0.0.1:{port}"
        self.reset()
        return self

    def reset(self) -> None:
        """Wipe every emulated resource. moto's backends live in this process and outlive a server, so a
        new stack starts (and a stopped one ends) from a clean slate."""
        import requests

        requests.post(f"{self.url}/moto-api/reset", timeout=10)

    def stop(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                self.reset()
            with contextlib.suppress(Exception):
                self._server.stop()
            self._server = None


def find_ddb_local_jar(*roots: Path) -> Path | None:
    env = os.environ.get("QBSYNC_DDB_LOCAL_JAR")
    if env:
        return Path(env) if Path(env).is_file() else None
    for root in (*roots, Path.cwd()):
        for base in (root, *root.parents):
            jar = base / DDB_LOCAL_RELATIVE
            if jar.is_file():
                return jar
    return None


class DynamoDBLocal:
    """DynamoDB Local as a child process, stopped by :meth:`stop` (and by the kernel if we die first)."""

    def __init__(self, jar: Path) -> None:
        self.jar = jar.resolve()  # Java runs with cwd=the jar directory
        self.url = ""
        self.startup_s = 0.0
        self.proc: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._errors: Any = None

    def start(self, region: str, timeout_s: float = 90.0) -> DynamoDBLocal:
        """Launch and wait until it answers.

        Raises FileNotFoundError (no java), RuntimeError (it exited) or TimeoutError.
        """
        self.launch()
        return self.wait_ready(region, timeout_s)

    def launch(self) -> DynamoDBLocal:
        java = shutil.which("java")
        if not java:
            raise FileNotFoundError("java is not on PATH")
        port = free_port()
        self._started = time.monotonic()
        # A file, not a pipe: nobody reads Java's chatter while it runs, and a full pipe would block it.
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        lib = self.jar.parent / "DynamoDBLocal_lib"
        self.proc = subprocess.Popen(
            [
                java,
                f"-Djava.library.path={lib}",
                "-jar",
                str(self.jar),
                "-inMemory",
                "-sharedDb",
                "-port",
                str(port),
                "-disableTelemetry",
            ],
            cwd=self.jar.parent,
            stdout=subprocess.DEVNULL,
            stderr=self._errors,
            preexec_fn=die_with_parent(),  # noqa: PLW1509
        )
        self.url = f"http://127.0.0.1:{port}"
        return self

    def wait_ready(self, region: str, timeout_s: float = 90.0) -> DynamoDBLocal:
        assert self.proc is not None
        ddb = client("dynamodb", self.url, region)
        while True:
            if self.proc.poll() is not None:
                self._errors.seek(0)
                err = self._errors.read().decode(errors="replace")
                raise RuntimeError(f"DynamoDB Local exited with {self.proc.returncode}: {err[-500:]}")
            try:
                ddb.list_tables()
                if _listens(self.proc.pid, int(self.url.rsplit(":", 1)[1])) is False:
                    # Something else answers on our port (it took the port between free_port() and Java's
                    # bind): wait for our Java to give up on the port, then the caller launches again.
                    raise ConnectionError("not our DynamoDB Local")
                break
            except Exception:
                if time.monotonic() - self._started > timeout_s:
                    self.stop()
                    raise TimeoutError(f"DynamoDB Local did not answer within {timeout_s}s") from None
                time.sleep(0.1)
        self.startup_s = time.monotonic() - self._started
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_child(proc, timeout_s=5)
        if self._errors is not None:
            self._errors.close()
            self._errors = None


def stop_child(proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """Stop a child server: SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that ties a child server's life to this process: only the main thread lives as long as
    the process, so only it may (None from any other thread)."""
    return _die_with_parent if threading.current_thread() is threading.main_thread() else None


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the child if this process dies without running its cleanup."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def create_resources(
    model: TemplateModel, resolver: Resolver, ddb_url: str, moto_url: str, region: str
) -> dict[str, Any]:
    """Create tables, queues, secrets and SSM parameters; fill the resolver's Ref / GetAtt values.

    Returns ``{"table_streams": {table_id: stream_arn}, "queue_urls": {queue_id: url}}``.
    """
    ddb = client("dynamodb", ddb_url, region)
    sqs = client("sqs", moto_url, region)
    table_streams: dict[str, str] = {}
    for spec in model.tables.values():
        desc = _create_table(ddb, spec)
        resolver.refs[spec.logical_id] = spec.logical_id
        resolver.attrs[(spec.logical_id, "Arn")] = desc["TableArn"]
        if desc.get("LatestStreamArn"):
            table_streams[spec.logical_id] = desc["LatestStreamArn"]
            resolver.attrs[(spec.logical_id, "StreamArn")] = desc["LatestStreamArn"]
    queue_urls: dict[str, str] = {}
    for spec in model.queues.values():
        url = sqs.create_queue(QueueName=spec.name, Attributes=_queue_attributes(spec))["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue_urls[spec.logical_id] = url
        resolver.refs[spec.logical_id] = url
        resolver.attrs.update(
            {
                (spec.logical_id, "Arn"): arn,
                (spec.logical_id, "QueueUrl"): url,
                (spec.logical_id, "QueueName"): spec.name,
            }
        )
    for spec in model.queues.values():
        if spec.dead_letter_id:
            policy = {
                "deadLetterTargetArn": resolver.attrs[(spec.dead_letter_id, "Arn")],
                "maxReceiveCount": spec.max_receive_count or 10,
            }
            sqs.set_queue_attributes(
                QueueUrl=queue_urls[spec.logical_id], Attributes={"RedrivePolicy": json.dumps(policy)}
            )
    for fn in model.functions:
        resolver.refs[fn] = fn
        resolver.attrs[(fn, "Arn")] = f"arn:aws:lambda:{region}:{resolver.account_id}:function:{fn}"
    sm = client("secretsmanager", moto_url, region)
    for spec in model.secrets.values():
        name = str(resolver.resolve(spec.name))
        value = resolver.resolve(spec.secret_string) if spec.secret_string is not None else None
        if value is None:
            value = generate_secret_string(resolver.resolve(spec.generate or {}))
        arn = sm.create_secret(Name=name, SecretString=value)["ARN"]
        resolver.refs[spec.logical_id] = arn
        resolver.attrs[(spec.logical_id, "Id")] = arn
    ssm = client("ssm", moto_url, region) if model.ssm_parameters else None
    for spec in model.ssm_parameters.values():
        name = str(resolver.resolve(spec.name))
        ssm.put_parameter(Name=name, Value=str(resolver.resolve(spec.value)), Type="String", Overwrite=True)
        resolver.refs[spec.logical_id] = name
    return {"table_streams": table_streams, "queue_urls": queue_urls}


def _create_table(ddb: Any, spec: TableSpec) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "TableName": spec.logical_id,
        "KeySchema": spec.key_schema,
        "AttributeDefinitions": spec.attribute_definitions,
        "BillingMode": spec.billing_mode,
    }
    provisioned = spec.billing_mode == "PROVISIONED"
    if provisioned:
        kwargs["ProvisionedThroughput"] = spec.provisioned or {
            "ReadCapacityUnits": 5,
            "WriteCapacityUnits": 5,
        }
    if spec.global_indexes:
        gsis = []
        for index in spec.global_indexes:
            gsi = {
                k: v for k, v in index.items() if k in ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput")
            }
            if provisioned:
                gsi.setdefault("ProvisionedThroughput", {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5})
            else:
                gsi.pop("ProvisionedThroughput", None)
            gsis.append(gsi)
        kwargs["GlobalSecondaryIndexes"] = gsis
    if spec.local_indexes:
        kwargs["LocalSecondaryIndexes"] = spec.local_indexes
    if spec.stream_view_type:
        kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": spec.stream_view_type}
    # The instance is ours and fresh (DynamoDBLocal.wait_ready), so a table already there is the one our first attempt
    # created: botocore retries a CreateTable that was slow to answer while the emulator warmed up.
    with contextlib.suppress(ddb.exceptions.ResourceInUseException):
        ddb.create_table(**kwargs)
    if spec.ttl_attribute:
        ddb.update_time_to_live(
            TableName=spec.logical_id,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute},
        )
    return dict(ddb.describe_table(TableName=spec.logical_id)["Table"])


def _queue_attributes(spec: QueueSpec) -> dict[str, str]:
    attrs = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in spec.attributes.items()}
    if spec.fifo:
        attrs["FifoQueue"] = "true"
    return attrs


def generate_secret_string(opts: dict[str, Any]) -> str:
    """A value for GenerateSecretString, honouring its length and character-class options."""
    length = int(opts.get("PasswordLength", 32))
    alphabet = ""
    if not opts.get("ExcludeLowercase"):
        alphabet += string.ascii_lowercase
    if not opts.get("ExcludeUppercase"):
        alphabet += string.ascii_uppercase
    if not opts.get("ExcludeNumbers"):
        alphabet += string.digits
    if not opts.get("ExcludePunctuation"):
        alphabet += "!#$%&()*+,-.:;<=>?@[]^_{|}~"
    if opts.get("IncludeSpace"):
        alphabet += " "
    exclude = set(opts.get("ExcludeCharacters", ""))
    alphabet = "".join(c for c in alphabet if c not in exclude) or string.ascii_letters
    password = "".join(secrets.choice(alphabet) for _ in range(length))
    template, key = opts.get("SecretStringTemplate"), opts.get("GenerateStringKey")
    if template and key:
        doc = json.loads(template)
        doc[key] = password
        return json.dumps(doc)
    return password
