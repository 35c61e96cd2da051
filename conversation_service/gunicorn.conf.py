"""gunicorn settings for conversation_service (see docs/conversation_service.md).

gevent workers, like chat_service: a connection costs a greenlet, not a thread. Under gthread (2
workers x 8 threads) 200 idle or trickling connections took every thread and no REST request was
answered within 5 s; under gevent REST kept answering in milliseconds (bench/slow_connections.py,
docs/benchmarks.md). A connection must deliver its request line and headers within `keepalive`
seconds (gevent's worker bounds reading each request by it), and idle keep-alive connections close
after it too.
"""

import os

worker_class = os.environ.get("WORKER_CLASS", "gevent")
if worker_class == "gevent":
    # Patch before anything below imports ssl or sockets: a module imported unpatched in the master
    # stays unpatched in every forked worker. The outbox worker's threads become greenlets.
    from gevent import monkey

    monkey.patch_all()

# gunicorn hooks for multiprocess metrics; nothing here may import prometheus_client (see there).
from shared.gunicorn_metrics import child_exit, multiprocess_dir_for, on_exit, on_starting  # noqa: E402, F401

bind = os.environ.get("BIND", "0.0.0.0:5002")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
multiprocess_dir_for(workers, "conversation_service")  # several workers: /metrics adds them all up
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "2000"))  # gevent only
threads = int(os.environ.get("THREADS", "8"))  # gthread only
keepalive = int(os.environ.get("KEEPALIVE_SECONDS", "5"))
# gunicorn's maximum: its default of 100 header fields answers an HTML 431 no gateway can rewrite
# (nginx cannot count fields); the gateway's 16,000-byte header bound refuses first (docs/deploy.md).
limit_request_fields = 32768
timeout = 60
graceful_timeout = 30
accesslog = None  # the app writes one JSON access line per request
preload_app = False  # each worker builds its own app, so each takes its own snowflake worker id


def pre_fork(server, worker):
    """Give the new worker the lowest slot no live worker holds (runs in the master)."""
    taken = {getattr(live, "snowflake_slot", None) for live in server.WORKERS.values()}
    worker.snowflake_slot = next(slot for slot in range(len(taken) + 1) if slot not in taken)


def post_worker_init(worker):
    """The app's startup objects out of the garbage collector's walks (shared/worker_gc.py)."""
    from shared.worker_gc import freeze_startup_objects

    freeze_startup_objects()


def post_fork(server, worker):
    """With SNOWFLAKE_WORKER_ID set, it is this instance's base: worker ids are base + slot.

    Unset, each worker derives its own from the host name and its pid (see snowflake.py).
    """
    from shared.settings import exit_on_config_error

    def check():
        from conversation_service.config import Config

        Config(os.environ, serving=True)

    # A wrong setting stops the server with one line per setting, not a traceback per worker boot.
    exit_on_config_error(check)
    base = os.environ.get("SNOWFLAKE_WORKER_ID")
    if base:
        os.environ["SNOWFLAKE_WORKER_ID"] = str(int(base) + worker.snowflake_slot)
