"""What the benches share: a server under gunicorn, a throwaway database, percentiles, the command line."""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.databases import create_and_drop_statements  # noqa: E402
from tests.processes import gunicorn_process  # noqa: E402

SECRET = "bench-secret-that-is-long-enough-for-hs256-000"
# What chat_service/gunicorn.conf.py sets without Redis: one gevent worker, 2,000 connections.
GEVENT_WORKER = ["--worker-class", "gevent", "--workers", "1", "--worker-connections", "2000"]


def command_line() -> str:
    return shlex.join([Path(sys.executable).name, *sys.argv])


def percentile(ordered: list[float], q: float) -> float:
    """The `q`-th percentile (0-100) of an already sorted list, nearest rank; NaN when empty."""
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[min(len(ordered), int(rank)) - 1]


def migrate(database_url: str, service: str = "chat_service") -> None:
    """A service's migrations (chat_service's by default), up to head, on `database_url`."""
    import importlib

    from flask_migrate import upgrade

    create_app = importlib.import_module(service).create_app

    # No outbox worker in the bench's own process: it would poll the database under test all along.
    config = {
        "DATABASE_URL": database_url,
        "JWT_SECRET": SECRET,
        "LOG_LEVEL": "WARNING",
        "OUTBOX_WORKER": "false",
    }
    with create_app(config).app_context():
        upgrade()


@contextmanager
def temporary_database(database_url: str | None, tag: str) -> Iterator[str]:
    """A fresh, empty database: a SQLite file without a URL; with a PostgreSQL or MariaDB/MySQL URL, a
    database of our own on that server (`bench_<tag>_<pid>`), dropped afterwards."""
    if not database_url:
        with tempfile.TemporaryDirectory(prefix=f"bench-{tag}-") as tmp:
            yield f"sqlite:///{tmp}/{tag}.sqlite3"
        return
    import sqlalchemy as sa

    url = sa.make_url(database_url)
    name = f"bench_{tag}_{os.getpid()}"
    backend = url.get_backend_name()
    try:
        create, drop = create_and_drop_statements(backend, name)
    except ValueError:
        raise SystemExit(
            "--database-url: PostgreSQL (postgresql+psycopg://...) or MariaDB (mysql+pymysql://...)"
        ) from None
    admin_url = url.set(database="postgres") if backend == "postgresql" else url
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(drop)
        conn.exec_driver_sql(create)
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(drop)
        admin.dispose()


@contextmanager
def gunicorn(
    app: str,
    environ: dict[str, str],
    options: list[str],
    log_path: Path,
    pythonpath: str | None = None,
    workers: int = 1,
) -> Iterator[str]:
    """Run `app` under gunicorn with `options` on a free port, output to `log_path`; yield its URL."""
    with gunicorn_process(
        app, environ, options, workers=workers, log_path=log_path, pythonpath=pythonpath
    ) as server:
        yield server.url
