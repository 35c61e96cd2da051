"""Probes for live-server tests: what a client, an operator or the kernel sees of chat_service from outside.

- `production_server`: chat_service under gunicorn with the production config (gevent), logging to a file;
- `RawSocket`: a WebSocket client on a bare TCP socket, with a tiny receive buffer, that writes frames
  and reads nothing until told to (a slow consumer: simple-websocket's client always reads in a thread);
- `log_lines` / `JsonLine`: the server's log file, line by line, JSON lines parsed;
- `worker_pids` / `rss_bytes`: the gunicorn workers of a master and their resident memory (/proc);
- `open_sockets`: the `ws_open_sockets` gauge from `/metrics`;
- `migrated_sqlite`: a chat database of its own, for live tests whose behaviour is not the database's.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import re
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import sqlalchemy as sa
from flask_migrate import upgrade

from tests.processes import ServerProcess, gunicorn_process

PRODUCTION = ["-c", "chat_service/gunicorn.conf.py"]  # gevent workers, the hooks of production

# gunicorn's own lines (its master and arbiter): `[2026-01-01 00:00:00 +0000] [1234] [INFO] Booting ...`.
GUNICORN_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[[A-Z]+\] ")


# --- servers -----------------------------------------------------------------------------------------


@contextmanager
def production_server(environ: dict[str, str], log_path: Path) -> Iterator[ServerProcess]:
    """chat_service under gunicorn with chat_service/gunicorn.conf.py (gevent), one worker, its stdout and
    stderr appended to `log_path`."""
    with gunicorn_process(
        "chat_service:create_app()", environ, worker=PRODUCTION, log_path=log_path
    ) as server:
        yield server


def migrated_sqlite(directory: Path, environ: Callable[..., dict[str, str]]) -> str:
    """A new chat_service SQLite database in `directory`, migrated to head; returns its URL."""
    from chat_service import create_app

    url = f"sqlite:///{directory}/chat-live.sqlite3"
    app = create_app(environ(url))
    with app.app_context():
        upgrade()
        from chat_service.extensions import db

        db.engine.dispose()
    release(app)
    return url


def release(app) -> None:
    """Stop a chat_service app's background work (Redis listener, provider connections), whichever
    layout it has: `chat_service.live` since the live-path rewrite, `hub` and `ai_provider` before."""
    live_path = app.extensions.get("chat_service.live")
    if live_path is not None:
        live_path.close()
        return
    for name in ("hub", "ai_provider"):
        if name in app.extensions:
            app.extensions[name].close()


def message_rows(database_url: str, session_id: str) -> list[tuple[str, str]]:
    """(role, content) of every row of the session in chat_messages, deleted or not, read directly."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT role, content FROM chat_messages WHERE session_id = :sid ORDER BY message_id"
                ),
                {"sid": session_id},
            ).all()
    finally:
        engine.dispose()
    return [(role, content) for role, content in rows]


def forget_session_keys(redis_url: str, session_id: str) -> None:
    """Drop whatever keys the servers left in Redis for this session (turn claims, replies so far)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"*{session_id}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def redis_url_or_skip() -> str:
    """TEST_REDIS_URL, or skip the test: it needs a Redis server."""
    import pytest

    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("TEST_REDIS_URL is not set: no Redis server to test against")
    return url


# --- waiting -----------------------------------------------------------------------------------------


def eventually(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "") -> Any:
    """The first truthy value of `predicate()` within `timeout` seconds, else AssertionError."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what or 'condition'} not met within {timeout}s (last value: {last!r})")
        time.sleep(interval)


# --- metrics and processes ---------------------------------------------------------------------------


def open_sockets(base_url: str) -> float:
    """The `ws_open_sockets` gauge as `/metrics` answers it."""
    text = requests.get(base_url + "/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("ws_open_sockets ") or line.startswith("ws_open_sockets{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no ws_open_sockets sample in /metrics")


def worker_pids(master_pid: int) -> list[int]:
    """The pids of a gunicorn master's workers (its child processes), from /proc."""
    children: list[int] = []
    for task in Path(f"/proc/{master_pid}/task").iterdir():
        with contextlib.suppress(OSError):
            children += [int(pid) for pid in (task / "children").read_text().split()]
    return children


def only_worker(master_pid: int) -> int:
    pids = eventually(lambda: worker_pids(master_pid), 10, what="a gunicorn worker")
    assert len(pids) == 1, f"expected one worker, found {pids}"
    return pids[0]


def rss_bytes(pid: int) -> int:
    """The resident memory of process `pid` (VmRSS in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


# --- the log file ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JsonLine:
    raw: str
    fields: dict | None  # the parsed object; None when the line is not a JSON object

    @property
    def is_gunicorn(self) -> bool:
        return self.fields is None and GUNICORN_LINE.match(self.raw) is not None

    def get(self, key: str, default: Any = None) -> Any:
        return (self.fields or {}).get(key, default)


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def log_lines(path: Path, start: int = 0) -> list[JsonLine]:
    """Every complete line of the log from byte `start` on, JSON objects parsed."""
    with open(path, "rb") as log:
        log.seek(start)
        data = log.read()
    lines = []
    for raw in data.decode(errors="replace").splitlines():
        if not raw.strip():
            continue
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        lines.append(JsonLine(raw, parsed if isinstance(parsed, dict) else None))
    return lines


def foreign_lines(lines: list[JsonLine]) -> list[str]:
    """Lines that are neither a JSON object nor one of gunicorn's own (a bare traceback, a print...)."""
    return [line.raw for line in lines if line.fields is None and not line.is_gunicorn]


# --- a WebSocket client that does not read -----------------------------------------------------------


@dataclass
class Drained:
    """What a `RawSocket` found when it finally read: the server's frames and how the stream ended."""

    texts: list[str] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str | None = None
    ended: str = ""  # "close" (a close frame), "eof", "reset", or "open" (still open at the deadline)


class RawSocket:
    """A WebSocket client over a plain TCP socket whose receive buffer is as small as the kernel allows.

    It reads the handshake answer and then nothing until `drain()`: the server's frames pile up in the
    kernel buffers (a few hundred KiB at most here, whatever the server's send buffer) and then in the
    server. Frames it sends are masked, as a client's must be. It offers no extension (no compression).
    """

    def __init__(self, url: str, headers: dict[str, str], receive_buffer: int = 4096) -> None:
        parts = urlsplit(url)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer
        )  # before connect: the window
        self.sock.settimeout(5)
        self.sock.connect((parts.hostname, parts.port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = [
            f"GET {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1",
            f"Host: {parts.hostname}:{parts.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        self.sock.sendall(("\r\n".join(request) + "\r\n\r\n").encode())
        self._buffer = b""
        while b"\r\n\r\n" not in self._buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"the server closed during the handshake: {self._buffer!r}")
            self._buffer += chunk
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError(f"handshake refused: {head.decode(errors='replace')}")
        self.closed_by_peer = False

    @staticmethod
    def frame(text: str, opcode: int = 0x1) -> bytes:
        """One masked client frame."""
        payload = text.encode()
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return header + mask + masked

    def send(self, payload: dict | str, timeout: float = 5) -> None:
        self.sock.settimeout(timeout)
        self.sock.sendall(self.frame(payload if isinstance(payload, str) else json.dumps(payload)))

    def flood(self, payload: dict, count: int, batch: int = 500, stall_seconds: float = 2.0) -> int:
        """Send `payload` up to `count` times without reading; stop early once the server stops reading
        (a write blocks for `stall_seconds`) or drops the connection. Returns how many frames went out."""
        one = self.frame(json.dumps(payload))
        sent = 0
        self.sock.settimeout(stall_seconds)
        while sent < count:
            n = min(batch, count - sent)
            try:
                self.sock.sendall(one * n)
            except TimeoutError:
                break  # the server reads no more: its buffers and ours are full
            except OSError as error:
                if error.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                    self.closed_by_peer = True
                    break
                raise
            sent += n
        return sent

    def drain(self, timeout: float) -> Drained:
        """Read until the server's close frame, the end of the stream, or `timeout`."""
        result = Drained()
        deadline = time.monotonic() + timeout
        buffer, position = bytearray(self._buffer), 0
        self._buffer = b""
        while True:
            while (parsed := _parse_frame(buffer, position)) is not None:
                opcode, payload, position = parsed
                if opcode == 0x1:
                    result.texts.append(payload.decode(errors="replace"))
                elif opcode == 0x8:
                    result.ended = "close"
                    if len(payload) >= 2:
                        result.close_code = struct.unpack("!H", payload[:2])[0]
                        result.close_reason = payload[2:].decode(errors="replace")
                    return result
            del buffer[:position]
            position = 0
            left = deadline - time.monotonic()
            if left <= 0:
                result.ended = "open"
                return result
            self.sock.settimeout(min(left, 1.0))
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            except ConnectionResetError:
                result.ended = "reset"
                return result
            if not chunk:
                result.ended = "eof"
                return result
            buffer += chunk

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _parse_frame(buffer: bytearray, start: int) -> tuple[int, bytes, int] | None:
    """(opcode, payload, end) of the whole unmasked server frame at `buffer[start:]`, else None."""
    if len(buffer) - start < 2:
        return None
    opcode = buffer[start] & 0x0F
    length = buffer[start + 1] & 0x7F
    offset = start + 2
    if length == 126:
        if len(buffer) < offset + 2:
            return None
        length = struct.unpack_from("!H", buffer, offset)[0]
        offset += 2
    elif length == 127:
        if len(buffer) < offset + 8:
            return None
        length = struct.unpack_from("!Q", buffer, offset)[0]
        offset += 8
    masked = bool(buffer[start + 1] & 0x80)  # a server must not mask; tolerate it anyway
    if len(buffer) < offset + (4 if masked else 0) + length:
        return None
    if masked:
        mask = bytes(buffer[offset : offset + 4])
        offset += 4
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(buffer[offset : offset + length]))
    else:
        payload = bytes(buffer[offset : offset + length])
    return opcode, payload, offset + length
