"""A service under a real gunicorn in its own process, for tests and benchmarks that need one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

GUNICORN = Path(sys.executable).with_name("gunicorn")
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ServerProcess:
    url: str
    process: subprocess.Popen


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if the process is still there after `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def gunicorn_process(
    app: str,
    environ: dict[str, str],
    worker: list[str] | None = None,
    *,
    workers: int = 1,
    log_path: Path | None = None,
    pythonpath: str | None = None,
) -> Iterator[ServerProcess]:
    """Run `app` (e.g. 'chat_service:create_app()') under gunicorn on a free loopback port.

    `worker` sets the worker class and its options (default: gthread, 16 threads). The server's output
    goes to `log_path` (a temporary file by default), never to a pipe: one nobody reads would block the
    worker once full.
    """
    port = free_port()
    graceful = environ.get("GRACEFUL_TIMEOUT", "5")  # the command line wins over a config file's
    command = [str(GUNICORN), "--bind", f"127.0.0.1:{port}", "--graceful-timeout", graceful]
    command += worker or ["--worker-class", "gthread", "--threads", "16"]
    if pythonpath:
        command += ["--pythonpath", pythonpath]
    env = {**os.environ, **environ, "BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": str(workers)}
    with open(log_path, "ab") if log_path else tempfile.TemporaryFile() as log:
        process = subprocess.Popen([*command, app], env=env, cwd=ROOT, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    # The master accepts connections before its worker loaded the app: retry on any failure.
                    requests.get(url + "/", timeout=2)
                    break
                except requests.RequestException:
                    if process.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        raise RuntimeError(log.read().decode(errors="replace")[-2000:]) from None
                    time.sleep(0.1)
            yield ServerProcess(url, process)
        finally:
            stop(process)
