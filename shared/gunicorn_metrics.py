"""What a gunicorn config needs for Prometheus multiprocess mode: the directory and the master's hooks.

prometheus-client picks in-process or multiprocess values once, when it is first imported, from
`PROMETHEUS_MULTIPROC_DIR`; a worker inherits the master's modules, so the variable must be set before
the master imports it. This module therefore never imports prometheus-client at module level: a config
imports it first, computes `workers`, then calls `multiprocess_dir_for(workers, service)`, which with
several workers and no `PROMETHEUS_MULTIPROC_DIR` creates a private directory and sets the variable
(the workers are forked after the config is read, and load the app themselves). `on_exit` removes
that directory when the master stops. See docs/operations.md.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_created: str | None = None


def multiprocess_dir_for(workers: int, service: str) -> str | None:
    """The multiprocess directory for a server of `workers` workers, made and exported when needed.

    `PROMETHEUS_MULTIPROC_DIR` set: that one. Unset (or empty) with one worker: None, values stay in
    the process. Unset with several: a new private directory (`<service>-prometheus-*` in the temporary
    directory), now in `PROMETHEUS_MULTIPROC_DIR` for this process and those it forks.
    """
    global _created
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:  # the operator's, or ours when gunicorn re-reads its config (HUP)
        return directory
    # An empty value still switches prometheus-client to multiprocess mode, with files in the cwd.
    os.environ.pop(MULTIPROC_ENV, None)
    if workers <= 1:
        return None
    if "prometheus_client.values" in sys.modules:
        raise RuntimeError(
            "prometheus_client was imported before multiprocess_dir_for(): its metrics would stay "
            "per worker. Call it in the gunicorn config before importing shared.metrics."
        )
    directory = tempfile.mkdtemp(prefix=f"{service}-prometheus-")
    os.environ[MULTIPROC_ENV] = directory
    _created = directory
    return directory


def on_starting(_server) -> None:
    """gunicorn hook (master, before any worker): start from an empty multiprocess directory, since
    files left by a previous run would be added to this one's values. Only prometheus-client's `*.db`
    files are removed: a directory set by mistake to a shared one (`/tmp`) loses nothing else."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)


def child_exit(_server, worker) -> None:
    """gunicorn hook (master, after a worker exits): drop its share of the live gauges (open sockets)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess  # here, by now the variable is set

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    """gunicorn hook (master, on the way out): remove the directory `multiprocess_dir_for` created.

    Kept while a master this one re-exec'd (USR2) runs: after a HUP it may have inherited the directory.
    """
    if _created is not None and not getattr(server, "reexec_pid", 0):
        shutil.rmtree(_created, ignore_errors=True)
