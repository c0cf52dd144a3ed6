"""The ClientApp component Flower loads (``pyproject.toml``).

With node-config ``site-worker`` (a socket path) it hands each message to the
site's long-lived worker (:mod:`pgsl_flower.pilot.site_worker`) and imports
neither torch nor the handlers; without it, it runs :mod:`pgsl_flower.client_app`
in this process. Either way the same handlers produce the reply.
"""

from __future__ import annotations

import math

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from pgsl_flower.pilot.site_worker import SITE_WORKER_KEY, forward


class SiteClientApp(ClientApp):
    """A ClientApp that runs the handlers here or in the site's worker."""

    def __call__(self, message: Message, context: Context) -> Message:
        path = str(context.node_config.get(SITE_WORKER_KEY) or "")
        if path:  # no longer than the server waits for the reply (run-config 'reply-timeout')
            return forward(path, message, context, timeout=_reply_timeout(context))
        from pgsl_flower.client_app import app as local_app

        return local_app(message, context)


def _reply_timeout(context: Context) -> float | None:
    try:
        seconds = float(context.run_config.get("reply-timeout", 0))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None  # the handlers refuse the value themselves, naming the key
    return seconds if math.isfinite(seconds) and seconds > 0 else None


app = SiteClientApp()
