"""gunicorn settings for conversation_service (see docs/conversation_service.md)."""

import os

# gunicorn hooks for multiprocess metrics; nothing here may import prometheus_client (see there).
from shared.gunicorn_metrics import child_exit, multiprocess_dir_for, on_exit, on_starting  # noqa: F401

bind = os.environ.get("BIND", "0.0.0.0:5002")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
multiprocess_dir_for(workers, "conversation_service")  # several workers: /metrics adds them all up
worker_class = "gthread"
threads = int(os.environ.get("THREADS", "8"))
timeout = 60
graceful_timeout = 30
accesslog = None  # the app writes one JSON access line per request
preload_app = False  # each worker builds its own app, so each takes its own snowflake worker id


def pre_fork(server, worker):
    """Give the new worker the lowest slot no live worker holds (runs in the master)."""
    taken = {getattr(live, "snowflake_slot", None) for live in server.WORKERS.values()}
    worker.snowflake_slot = next(slot for slot in range(len(taken) + 1) if slot not in taken)


def post_fork(server, worker):
    """With SNOWFLAKE_WORKER_ID set, it is this instance's base: worker ids are base + slot.

    Unset, each worker derives its own from the host name and its pid (see snowflake.py).
    """
    base = os.environ.get("SNOWFLAKE_WORKER_ID")
    if base:
        os.environ["SNOWFLAKE_WORKER_ID"] = str(int(base) + worker.snowflake_slot)
