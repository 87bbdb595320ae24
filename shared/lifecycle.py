"""A fresh container: forget every per-process cache.

In Lambda a container's caches (settings, AWS clients, the table binding, secret values, pacers, the OAuth
client, handler singletons) live exactly as long as its environment, so nothing ever needs this. The local stack
does: it runs one stack after another in one process (tests), each with new endpoints, and calls this when a
stack starts and stops so every function behaves like a cold start.
"""

from __future__ import annotations

import sys


def reset_container_state() -> None:
    from shared.adapters import aws, dynamo, secrets
    from shared.adapters.qbo import pacing
    from shared.config import reset_settings_cache

    reset_settings_cache()
    dynamo.reset_binding()
    aws.reset()
    secrets.reset_client()
    pacing.reset_pacers()
    # Modules that are only reset if something imported them (importing them here would cost cold start).
    oauth = sys.modules.get("shared.adapters.qbo.oauth")
    if oauth is not None:
        oauth.reset_oauth()
    ops = sys.modules.get("shared.services.ops")
    if ops is not None:
        ops.reset_services()
    # Handler singletons (engines, keyrings, processors): the next invocation imports the handler anew.
    for name in [m for m in sys.modules if m == "functions" or m.startswith("functions.")]:
        del sys.modules[name]
