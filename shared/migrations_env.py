"""The body of each service's Alembic `env.py`: migrate the app's Flask-SQLAlchemy database.

Each service keeps its revision in a version table of its own (`<service>_alembic_version`, given by
`migrate.init_app(..., version_table=...)`), so the two services can share one database. A database
migrated before that kept it in Alembic's default `alembic_version`: the first upgrade moves the
service's row over (`adopt_legacy_version`), and migrates on from there.
"""

from __future__ import annotations

import logging
from logging.config import fileConfig

import sqlalchemy as sa
from alembic import context
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from flask import current_app

from shared.db import unbounded

log = logging.getLogger("alembic.env")
LEGACY_VERSION_TABLE = "alembic_version"


def adopt_legacy_version(connection, version_table: str, script: ScriptDirectory, metadata) -> None:
    """Move this service's revision from `alembic_version` into `version_table`, once.

    The row is the service's when its revision is one of the service's and the service's tables are in
    the database (both services number their revisions 0001, 0002, ...). The legacy table is dropped
    once empty.
    """
    inspector = sa.inspect(connection)
    if inspector.has_table(version_table) or not inspector.has_table(LEGACY_VERSION_TABLE):
        return
    if not {table.name for table in metadata.sorted_tables} & set(inspector.get_table_names()):
        return
    legacy = sa.table(LEGACY_VERSION_TABLE, sa.column("version_num"))
    revisions = connection.execute(sa.select(legacy.c.version_num)).scalars().all()
    ours = [revision for revision in revisions if _known(script, revision)]
    if not ours:
        return
    # Alembic's own definition of a version table.
    table = sa.Table(
        version_table,
        sa.MetaData(),
        sa.Column("version_num", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("version_num", name=f"{version_table}_pkc"),
    )
    table.create(connection)
    connection.execute(table.insert(), [{"version_num": revision} for revision in ours])
    connection.execute(legacy.delete().where(legacy.c.version_num.in_(ours)))
    if len(ours) == len(revisions):
        sa.Table(LEGACY_VERSION_TABLE, sa.MetaData()).drop(connection)
    log.info("moved revision %s from %s to %s", ", ".join(ours), LEGACY_VERSION_TABLE, version_table)


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


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
    options = dict(current_app.extensions["migrate"].configure_args)

    if context.is_offline_mode():
        context.configure(
            url=config.get_main_option("sqlalchemy.url"),
            literal_binds=True,
            target_metadata=db.metadata,
            **options,
        )
        with context.begin_transaction():
            context.run_migrations()
        return

    def skip_empty(_context, _revision, directives) -> None:
        """`flask db migrate` with no schema change writes no empty revision."""
        if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
            directives[:] = []
            log.info("No changes in schema detected.")

    options.setdefault("process_revision_directives", skip_empty)
    with engine.connect() as connection, unbounded(connection):  # a migration may run for minutes
        if "version_table" in options:
            with connection.begin():
                adopt_legacy_version(
                    connection, options["version_table"], ScriptDirectory.from_config(config), db.metadata
                )
        context.configure(connection=connection, target_metadata=db.metadata, **options)
        with context.begin_transaction():
            context.run_migrations()
