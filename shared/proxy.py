"""Trust `X-Forwarded-*` from a configured number of proxies in front of the service, never blindly."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix


def init_app(app: Flask) -> None:
    """With `TRUSTED_PROXIES` = n > 0, take the client's address, scheme and host from the last n hops.

    At 0 (the default) the headers are ignored: a client could set them to anything.
    """
    hops = int(app.config.get("TRUSTED_PROXIES", 0))
    if hops > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
