"""``python -m infra.local up [--template template.yaml] [--json] [--no-ddb-local]``: run the local stack.

With ``--json`` one line of JSON with every URL is printed once everything is ready. Ctrl-C or SIGTERM stops
everything (threads, servers, DynamoDB Local).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from infra.local.stack import LocalStack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local", description="qbsync local stack")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the local stack in the foreground (Ctrl-C stops it)")
    up.add_argument("--template", default="template.yaml", help="SAM template (default: template.yaml)")
    up.add_argument("--json", action="store_true", help="print one line of JSON with every URL when ready")
    up.add_argument("--no-ddb-local", action="store_true", help="use moto for DynamoDB instead of DynamoDB Local")
    up.add_argument("--schedule-interval", type=float, default=None, help="fire every schedule every N seconds")
    up.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="template parameter")
    up.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    params = dict(p.split("=", 1) for p in args.param)
    stack = LocalStack(
        args.template,
        parameters=params,
        use_ddb_local=not args.no_ddb_local,
        schedule_interval_override_s=args.schedule_interval,
    )
    try:
        stack.start()
        if args.json:
            print(json.dumps(stack.urls), flush=True)
        else:
            print(f"local stack up ({stack.ddb_backend} for DynamoDB); Ctrl-C stops it", flush=True)
            for name, url in stack.urls.items():
                print(f"  {name:16} {url}", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the cleanup
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
