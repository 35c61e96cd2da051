"""gunicorn settings for chat_service (see the README for how `make run` and compose start it)."""

import os

bind = os.environ.get("BIND", "0.0.0.0:5001")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("THREADS", "8"))
timeout = 60
graceful_timeout = 30
accesslog = None  # the app writes one JSON access line per request
