"""What both services use alike: the envelope and errors, JWT checks, traceId, logging, paging."""

from __future__ import annotations

from flask import Flask

from shared import auth, cli, errors, logs, openapi, proxy, tracing


def init_app(app: Flask) -> None:
    """Install the envelope, error rendering, traceId, JSON logs and token checks on `app`."""
    proxy.init_app(app)
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    logs.configure_logging(app.config.get("LOG_LEVEL", "INFO"))
    tracing.init_app(app)
    logs.init_app(app)
    errors.init_app(app)
    auth.init_app(app)
    cli.init_app(app)
    openapi.init_app(app)
