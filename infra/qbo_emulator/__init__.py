"""Stateful QuickBooks Online (API v3 + OAuth 2.0 + webhooks) emulator for tests, the local stack and benches.

Start in-process: ``srv = EmulatorServer(port=0).start(); srv.url; srv.stop()``; from a shell:
``python -m infra.qbo_emulator --port 8765``. See docs/contracts.md for the control API.
"""

from .control import EmulatorControl
from .server import DEFAULT_REALM, Emulator, EmulatorServer
from .webhooks import sign as sign_webhook
from .webhooks import verify as verify_webhook

__all__ = ["DEFAULT_REALM", "Emulator", "EmulatorControl", "EmulatorServer", "sign_webhook", "verify_webhook"]
