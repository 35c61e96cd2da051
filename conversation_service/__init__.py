"""conversation_service: AI conversation records (pinned, searchable, linked to a Dify conversation)."""

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
from conversation_service.config import Config
from conversation_service.extensions import db, migrate
from conversation_service.snowflake import Snowflake

MIGRATIONS = Path(__file__).parent / "migrations"
# Alembic's version table, named for the service: both services can migrate one shared database.
VERSION_TABLE = "conversation_service_alembic_version"


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
    shared.health.init_app(app, db)
    shared.metrics.init_app(app)
    shared.rate_limits.init_app(
        app, {"requests": "LIMIT_REQUESTS", "records_created": "LIMIT_RECORDS_CREATED"}
    )
    app.extensions["snowflake"] = Snowflake(app.config["SNOWFLAKE_WORKER_ID"])

    from conversation_service import api, erasure, purge, sync

    sync.init_app(app)
    purge.init_app(app)
    erasure.init_app(app)
    app.url_map.converters["conversation_id"] = api.ConversationIdConverter
    app.register_blueprint(api.bp)
    app.register_blueprint(api.internal_bp)
    shared.admission.init_app(app)  # after the blueprints: it admits their requests
    return app
