"""gunicorn hooks for both apps of bench/rest_overhead.py (ours and the bare one): what the production
configs do to a worker's process once its app is loaded, so the bench measures the same runtime."""

from shared.worker_gc import freeze_startup_objects


def post_worker_init(worker):
    freeze_startup_objects()
