"""gunicorn settings for chat_service.

gevent workers: a socket costs a greenlet, not a thread, so one worker holds ~1,000 open sockets with
REST latency unchanged (bench/ws_capacity.py; with gthread, 8 idle sockets took all 8 threads and
every REST request timed out). Without Redis, fan-out is in-process, so there is one worker; with
`REDIS_URL`, fan-out spans workers and `WEB_CONCURRENCY` (default 2) sets their number.
"""

import os
import signal

worker_class = os.environ.get("WORKER_CLASS", "gevent")
if worker_class == "gevent":
    # Patch before anything below imports ssl or sockets (the hooks import shared, hence PyJWT's JWKS
    # client): a module imported unpatched in the master stays unpatched in every forked worker.
    from gevent import monkey

    monkey.patch_all()

# gunicorn hooks for multiprocess metrics; nothing here may import prometheus_client (see there).
from shared.gunicorn_metrics import child_exit, multiprocess_dir_for, on_exit, on_starting  # noqa: E402, F401
from shared.open_files import raise_open_files_limit  # noqa: E402

bind = os.environ.get("BIND", "0.0.0.0:5001")
workers = int(os.environ.get("WEB_CONCURRENCY", "2" if os.environ.get("REDIS_URL") else "1"))
multiprocess_dir_for(workers, "chat_service")  # several workers: /metrics adds them all up
# Open connections per gevent worker, idle sockets included (bench/ws_capacity.py holds 10,000 on one).
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "10000"))
# Each connection is a file descriptor: raise this process's soft limit (the workers inherit it) to what
# the workers may hold, up to the hard limit; a lower hard limit is the operator's (docs/operations.md).
raise_open_files_limit(workers * worker_connections + 256)
threads = int(os.environ.get("THREADS", "8"))  # gthread only
# gevent bounds reading each request's line and headers by it (a trickler is closed), and idle
# keep-alive connections close after it (bench/slow_connections.py, docs/operations.md).
keepalive = int(os.environ.get("KEEPALIVE_SECONDS", "5"))
# gunicorn's maximum: its default of 100 header fields answers an HTML 431 no gateway can rewrite
# (nginx cannot count fields); the gateway's 16,000-byte header bound refuses first (docs/deploy.md).
limit_request_fields = 32768
timeout = 60
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "30"))
accesslog = None  # the app writes one JSON access line per request


def post_fork(server, worker):
    """A wrong setting stops the server with one line per setting, not a traceback per worker boot."""
    from shared.settings import exit_on_config_error

    def check():
        from chat_service.config import Config

        Config(os.environ, serving=True)

    exit_on_config_error(check)


def post_worker_init(worker):
    """The app's startup objects out of the garbage collector's walks (shared/worker_gc.py); on
    SIGTERM, close every socket with 1001 (going away) instead of letting them hang to the end."""
    from chat_service import live
    from shared.worker_gc import freeze_startup_objects

    freeze_startup_objects()

    hub = live.of(worker.wsgi).hub

    def handle_exit(_signum, _frame):
        worker.alive = False
        if worker_class == "gevent":
            import gevent

            gevent.spawn(hub.going_away)  # no blocking calls inside a signal handler
        else:
            hub.going_away()

    signal.signal(signal.SIGTERM, handle_exit)


def worker_exit(server, worker):
    """Let AI turns in flight finish and be stored before the process goes."""
    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions"):
        from chat_service import live

        live.of(app).turns.wait_idle(graceful_timeout)
