"""Swagger UI for the service's /openapi.json at /docs (API_DOCS). Being built: issue 13."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Serve Swagger UI, offline, from the installed swagger-ui-bundle package."""
