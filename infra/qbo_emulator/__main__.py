"""`python -m infra.qbo_emulator`: run the emulator until interrupted."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from .server import DEFAULT_REALM, EmulatorServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.qbo_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--client-id", default="emulator-client")
    parser.add_argument("--client-secret", default="emulator-secret")
    parser.add_argument(
        "--redirect-uri",
        action="append",
        default=None,
        help="registered redirect URI (repeatable); default http://localhost:8000/callback",
    )
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument("--verifier-token", default="emulator-verifier-token")
    parser.add_argument(
        "--format", choices=["legacy", "cloudevents"], default="cloudevents", help="webhook payload format"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line with the URLs when ready")
    args = parser.parse_args(argv)
    srv = EmulatorServer(
        host=args.host,
        port=args.port,
        client_id=args.client_id,
        client_secret=args.client_secret,
        redirect_uris=args.redirect_uri,
        webhook_url=args.webhook_url,
        verifier_token=args.verifier_token,
        webhook_format=args.format,
    ).start()
    info = {
        "url": srv.url,
        "api_base": f"{srv.url}/v3",
        "discovery": f"{srv.url}/.well-known/openid_configuration",
        "control": f"{srv.url}/_emulator",
        "client_id": args.client_id,
        "default_realm": DEFAULT_REALM,
    }
    if args.json:
        print(json.dumps(info), flush=True)
    else:
        print(f"QBO emulator listening on {srv.url} (discovery {info['discovery']})", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
