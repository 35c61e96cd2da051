"""chat_service under a real gunicorn in its own process, for tests that need several processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

GUNICORN = Path(sys.executable).with_name("gunicorn")


@dataclass(frozen=True)
class ServerProcess:
    url: str
    process: subprocess.Popen


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def gunicorn_process(
    app: str, environ: dict[str, str], worker: list[str] | None = None
) -> Iterator[ServerProcess]:
    """Run `app` (e.g. 'chat_service:create_app()') under one gunicorn worker on a free port.
    `worker` sets the worker class and its options (default: gthread, 16 threads)."""
    port = free_port()
    command = [str(GUNICORN), "--bind", f"127.0.0.1:{port}", "--workers", "1", "--graceful-timeout", "3"]
    command += worker or ["--worker-class", "gthread", "--threads", "16"]
    process = subprocess.Popen(
        [*command, app],
        env={**os.environ, **environ, "BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                # The master accepts connections before its worker has loaded the app: retry on any failure.
                requests.get(url + "/", timeout=2)
                break
            except requests.RequestException:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(process.stderr.read().decode()[-2000:]) from None
                time.sleep(0.1)
        yield ServerProcess(url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stderr.close()
