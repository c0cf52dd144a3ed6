"""The ClientApp component Flower loads (``pyproject.toml``).

With node-config ``site-worker`` (a socket path) it hands each message to the
site's long-lived worker (:mod:`pgsl_flower.pilot.site_worker`) and imports
neither torch nor the handlers; without it, it runs :mod:`pgsl_flower.client_app`
in this process. Either way the same handlers produce the reply.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from pgsl_flower.pilot.site_worker import SITE_WORKER_KEY, forward


class SiteClientApp(ClientApp):
    """A ClientApp that runs the handlers here or in the site's worker."""

    def __call__(self, message: Message, context: Context) -> Message:
        path = str(context.node_config.get(SITE_WORKER_KEY) or "")
        if path:
            return forward(path, message, context)
        from pgsl_flower.client_app import app as local_app

        return local_app(message, context)


app = SiteClientApp()
