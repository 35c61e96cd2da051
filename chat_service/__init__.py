"""chat_service: chat sessions and their messages (REST, view routes, WebSocket)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from flask import Flask

import shared
import shared.admission
import shared.cli
import shared.cors
import shared.db
import shared.docs
import shared.health
import shared.metrics
import shared.rate_limits
import shared.search_text
from chat_service.config import Config
from chat_service.extensions import db, migrate, sock
from shared.http import ServiceClient

MIGRATIONS = Path(__file__).parent / "migrations"
# Alembic's version table, named for the service: both services can migrate one shared database.
VERSION_TABLE = "chat_service_alembic_version"
# Per-user rate limits (shared.rate_limits): rule name -> its setting.
RATE_RULES = {
    "requests": "LIMIT_REQUESTS",
    "sessions_created": "LIMIT_SESSIONS_CREATED",
    "turns": "LIMIT_TURNS",
    "tokens": "LIMIT_TOKENS",
}


def create_app(environ: Mapping[str, str] | None = None, *, serving: bool | None = None) -> Flask:
    """Build the app from environment variables (`environ` replaces `os.environ`, for tests).

    `serving` (default: not under `flask db`) requires what answering requests needs, a key for tokens
    and the AI provider's; a migration needs only the database URL. Wrong settings raise `ConfigError`.
    """
    serving = shared.cli.serving() if serving is None else serving
    app = Flask(__name__, static_folder=None)
    config = Config(os.environ if environ is None else environ, serving=serving)
    app.config.from_mapping(config.as_dict())
    shared.init_app(app)
    shared.cors.init_app(app)
    shared.docs.init_app(app)
    db.init_app(app)
    shared.db.init_app(app, db)  # after db.init_app: its teardown must run first
    # The search index's per-backend objects (FTS5 tables, a generated tsvector) are the migrations' own.
    migrate.init_app(
        app,
        db,
        directory=str(MIGRATIONS),
        version_table=VERSION_TABLE,
        include_object=shared.search_text.include_object,
    )
    sock.init_app(app)

    from chat_service import live
    from chat_service.providers import EchoProvider, make_provider

    conversations = ServiceClient(
        app.config["CONVERSATION_SERVICE_URL"], service_name=Config.SERVICE_NAME, config=app.config
    )
    # A migration starts no turn: it gets the offline provider, so it needs no provider key.
    provider = make_provider(app.config) if serving else EchoProvider.from_config(app.config)
    bus = live.init_app(app, provider, conversations).bus
    shared.health.init_app(app, db, checks={"redis": bus.check} if bus.configured else None)
    shared.metrics.init_app(app)
    shared.rate_limits.init_app(app, RATE_RULES)

    from chat_service import api, erasure, page, purge, sync, views
    from chat_service.live import socket

    sync.init_app(app)
    purge.init_app(app)
    erasure.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(api.internal_bp)
    app.register_blueprint(views.bp)
    if app.config["CHAT_PAGE"]:
        app.register_blueprint(page.bp)
    app.register_blueprint(socket.bp)
    shared.admission.init_app(app, unadmitted=[socket.bp.name])  # after the blueprints: it admits theirs
    return app
