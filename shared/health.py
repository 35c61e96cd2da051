"""Probes outside auth: `/healthz` (the process answers) and `/readyz` (its dependencies answer too).

Readiness runs every check at once under one deadline, so a dependency that hangs (a firewalled host,
a client that retries) turns into a 503 in seconds rather than a probe that times out itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from functools import partial

from flask import Blueprint, Flask, current_app
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine, text

from shared.envelope import envelope_response
from shared.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 3.0

Check = Callable[[], object]
"""A readiness check: returns when its dependency answers, raises (or returns False) when it does not."""

bp = Blueprint("health", __name__)
_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="readyz")


def init_app(
    app: Flask,
    db: SQLAlchemy,
    checks: Mapping[str, Check] | None = None,
    timeout: float = READY_TIMEOUT_SECONDS,
) -> None:
    """Serve the probes; `/readyz` checks the database through `db`, then each of `checks` by name."""
    app.extensions["shared.health"] = {"db": db, "checks": dict(checks or {}), "timeout": timeout}
    app.register_blueprint(bp)


@bp.get("/healthz")
def healthz():
    """Alive: the process serves requests. Touches nothing else, so a database outage never restarts it."""
    return envelope_response({"status": "alive", "service": current_app.config["SERVICE_NAME"]})


@bp.get("/readyz")
def readyz():
    """Ready: the database answers `SELECT 1` (and Redis `PING`, when configured); 503 naming what failed."""
    settings = current_app.extensions["shared.health"]
    checks = {"database": partial(_select_one, settings["db"].engine), **settings["checks"]}
    results = _run(checks, settings["timeout"])
    failed = [name for name, result in results.items() if result != "ok"]
    if failed:
        raise DatabaseUnavailable(data={"status": "unavailable", "checks": results, "failed": failed})
    return envelope_response({"status": "ready", "checks": results})


def _select_one(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _run(checks: Mapping[str, Check], timeout: float) -> dict[str, str]:
    """Each check's outcome, `ok`, `failed` or `timeout`; the reasons go to the log, not to the client."""
    futures = {name: _executor.submit(check) for name, check in checks.items()}
    wait(futures.values(), timeout=timeout)
    results = {}
    for name, future in futures.items():
        if not future.done():
            log.warning("readiness check %s did not answer within %ss", name, timeout)
            results[name] = "timeout"
        elif future.exception() is not None:
            error = future.exception()
            log.warning("readiness check %s failed: %s: %s", name, error.__class__.__name__, error)
            results[name] = "failed"
        elif future.result() is False:
            log.warning("readiness check %s answered no", name)
            results[name] = "failed"
        else:
            results[name] = "ok"
    return results
