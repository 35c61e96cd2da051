"""CORS for browser pages on other origins (CORS_ALLOWED_ORIGINS). Being built: issue 13."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Answer preflights and add Access-Control-* headers for the allowed origins."""
