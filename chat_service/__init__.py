"""chat_service: chat sessions and their messages (REST, view routes, WebSocket)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from flask import Flask

import shared
from chat_service.config import Config
from chat_service.extensions import db, migrate

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(environ: Mapping[str, str] | None = None) -> Flask:
    """Build the app from environment variables (`environ` replaces `os.environ`, for tests)."""
    app = Flask(__name__, static_folder=None)
    app.config.from_mapping(Config(os.environ if environ is None else environ).as_dict())
    shared.init_app(app)
    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS))

    from chat_service import api, views

    app.register_blueprint(api.bp)
    app.register_blueprint(views.bp)
    return app
