"""A job run every so often in a daemon thread of a serving process (both services' purge)."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable

from flask import Flask

from shared import outbox

log = logging.getLogger(__name__)


class Every:
    """`job()` every `interval` seconds, in the app's context, in a daemon thread; a failed round is
    logged and the next one tries again."""

    def __init__(self, app: Flask, interval: float, name: str, job: Callable[[], object]) -> None:
        self._app = weakref.ref(app)  # as the outbox worker: never keeps a discarded app alive
        self.interval = interval
        self.name = name
        self._job = job
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-{app.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5) -> None:
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            app = self._app()
            if app is None:
                return
            with app.app_context():
                try:
                    log.info("%s: %s", self.name, self._job())
                except Exception as error:  # the database is down, say: the next round tries again
                    log.warning("%s failed: %s: %s", self.name, error.__class__.__name__, str(error)[:300])
            del app


def every(app: Flask, setting: str, name: str, job: Callable[[], object]) -> Every | None:
    """Start `job` every `app.config[setting]` seconds in a serving process (0, or a CLI command: never);
    kept in `app.extensions[name]`."""
    interval = app.config[setting]
    if interval <= 0 or outbox.in_cli_command():
        return None
    app.extensions[name] = schedule = Every(app, interval, name, job)
    schedule.start()
    return schedule
