"""The body of each service's Alembic `env.py`: migrate the app's Flask-SQLAlchemy database."""

from __future__ import annotations

import logging
from logging.config import fileConfig

from alembic import context
from flask import current_app

from shared.db import unbounded

log = logging.getLogger("alembic.env")


def run() -> None:
    config = context.config
    if config.config_file_name is not None:
        # Keep the app's JSON loggers: Alembic's default would disable every existing logger.
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    db = current_app.extensions["migrate"].db
    engine = db.engine
    config.set_main_option(
        "sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%")
    )

    if context.is_offline_mode():
        context.configure(
            url=config.get_main_option("sqlalchemy.url"),
            literal_binds=True,
            target_metadata=db.metadata,
        )
        with context.begin_transaction():
            context.run_migrations()
        return

    def skip_empty(_context, _revision, directives) -> None:
        """`flask db migrate` with no schema change writes no empty revision."""
        if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
            directives[:] = []
            log.info("No changes in schema detected.")

    options = dict(current_app.extensions["migrate"].configure_args)
    options.setdefault("process_revision_directives", skip_empty)
    with engine.connect() as connection, unbounded(connection):  # a migration may run for minutes
        context.configure(connection=connection, target_metadata=db.metadata, **options)
        with context.begin_transaction():
            context.run_migrations()
