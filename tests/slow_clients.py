"""Slow clients, as an attacker runs them: idle connections, trickled headers, trickled bodies.

`SlowClients` keeps `count` connections of each kind open on a server, sending one more byte every
`interval` seconds and never finishing a request; a connection the server closes is opened again at
once, so the pressure stays at `count`. `probe` meanwhile times ordinary REST requests. Used by
tests/test_slow_connections.py and bench/slow_connections.py.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

KINDS = ("idle", "headers", "body")


@dataclass
class Kind:
    """What happened to the connections of one kind."""

    opened: int = 0
    refused: int = 0  # connect() failed or timed out
    lifetimes: list[float] = field(default_factory=list)  # seconds until the server closed one

    @property
    def closed(self) -> int:
        return len(self.lifetimes)


class _Conn:
    def __init__(self, kind: str, sock: socket.socket) -> None:
        self.kind, self.sock, self.opened_at, self.sent = kind, sock, time.monotonic(), 0


class SlowClients:
    """`count` connections of each kind in `kinds`, kept open and trickling against `url`."""

    def __init__(
        self,
        url: str,
        count: int,
        *,
        body_path: str,
        headers: dict[str, str] | None = None,
        kinds: tuple[str, ...] = KINDS,
        interval: float = 1.0,
    ) -> None:
        parts = urlsplit(url)
        self.address = (parts.hostname, parts.port)
        self.count, self.kinds, self.interval = count, kinds, interval
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        host = f"Host: {parts.netloc}\r\n"
        self.head = {
            "idle": b"",
            "headers": f"GET /healthz HTTP/1.1\r\n{host}".encode(),
            "body": (
                f"POST {body_path} HTTP/1.1\r\n{host}{extra}Content-Type: application/json\r\n"
                f"Content-Length: 100000\r\n\r\n{{"
            ).encode(),
        }
        self.stats = {kind: Kind() for kind in kinds}
        self._conns: list[_Conn] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)

    def __enter__(self) -> SlowClients:
        for kind in self.kinds:
            for _ in range(self.count):
                self._open(kind)
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.sock.close()

    @property
    def open_now(self) -> dict[str, int]:
        return {kind: sum(c.kind == kind for c in self._conns) for kind in self.kinds}

    def _open(self, kind: str) -> None:
        try:
            sock = socket.create_connection(self.address, timeout=2)
            if self.head[kind]:
                sock.sendall(self.head[kind])
        except OSError:
            self.stats[kind].refused += 1
            return
        sock.setblocking(False)
        self.stats[kind].opened += 1
        self._conns.append(_Conn(kind, sock))

    def _closed_by_server(self, conn: _Conn) -> bool:
        try:
            conn.sock.recv(1, socket.MSG_PEEK)  # b"" when closed; any byte is an answer (400, 408)
            return True
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _trickle(self, conn: _Conn) -> bool:
        """Send the next byte of a never-ending request; False when the connection is gone."""
        piece = {"idle": b"", "headers": b"X-Slow-%d: 1\r\n" % conn.sent, "body": b" "}[conn.kind]
        if not piece:
            return True
        try:
            conn.sock.send(piece)
        except BlockingIOError:
            return True
        except OSError:
            return False
        conn.sent += 1
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            alive = []
            for conn in self._conns:
                if self._closed_by_server(conn) or not self._trickle(conn):
                    self.stats[conn.kind].lifetimes.append(time.monotonic() - conn.opened_at)
                    with contextlib.suppress(OSError):
                        conn.sock.close()
                else:
                    alive.append(conn)
            self._conns = alive
            for kind in self.kinds:
                for _ in range(self.count - self.open_now[kind]):
                    if self._stop.is_set():
                        return
                    self._open(kind)


@dataclass
class Probes:
    """Latencies (ms) of REST requests, and those that failed or timed out."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]

    @property
    def median(self) -> float:
        return statistics.median(self.latencies) if self.latencies else float("nan")


def probe(
    url: str, headers: dict[str, str], seconds: float, every: float = 0.2, timeout: float = 5
) -> Probes:
    """GET `url` on a fresh connection every `every` seconds for `seconds`; a 200 within `timeout` is a
    success, anything else a failure (its latency counted as `timeout`)."""
    probes = Probes()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        try:
            response = requests.get(url, headers={**headers, "Connection": "close"}, timeout=timeout)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code == 200:
                probes.latencies.append(elapsed)
            else:
                probes.failures.append(f"HTTP {response.status_code}")
                probes.latencies.append(elapsed)
        except requests.RequestException as error:
            probes.failures.append(error.__class__.__name__)
            probes.latencies.append(timeout * 1000)
        time.sleep(max(0.0, every - (time.perf_counter() - started)))
    return probes
