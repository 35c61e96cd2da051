"""A socket's one writer: every byte sent to a WebSocket client (frames, pings, pongs, the close frame)
is queued here and written by one thread, so no two greenlets ever write to the same socket and a
client that stops reading blocks nobody but its own writer.

`Outbox` stands in for the client's socket under simple-websocket (it is put in the WSGI environ before
the handshake): `send` queues, `recv` reads the real socket. The queue's bound applies to the app's
frames (`has_room`); what simple-websocket itself sends (pings, pongs, close) is tiny and always taken.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import deque


class Outbox:
    def __init__(self, sock: socket.socket, *, max_frames: int, max_bytes: int) -> None:
        self._sock = sock
        self.max_frames, self.max_bytes = max_frames, max_bytes
        self._queue: deque[bytes] = deque()
        self._frames = self._bytes = 0  # queued or being written
        self._done = threading.Condition()
        self._closing = False  # no more writes are taken; the writer ends once the queue is sent
        self._closed = False  # the real socket is shut
        self._writer: threading.Thread | None = None

    # -- the socket interface simple-websocket uses ------------------------------------------------------

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv(self, size: int) -> bytes:
        return self._sock.recv(size)

    def send(self, data: bytes) -> int:
        """Queue `data` for the writer; never blocks. After close, bytes are dropped."""
        with self._done:
            if self._closing:
                return len(data)
            self._queue.append(bytes(data))
            self._frames += 1
            self._bytes += len(data)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write, name="ws-writer", daemon=True)
                self._writer.start()
            else:
                self._done.notify_all()
        return len(data)

    sendall = send

    def close(self) -> None:
        """Take no more writes; the writer sends what is queued, then shuts the socket."""
        with self._done:
            self._closing = True
            self._done.notify_all()
            if self._writer is None:
                self._shut()

    def __getattr__(self, name: str):
        return getattr(self._sock, name)

    # -- for the socket handler ------------------------------------------------------------------------

    def has_room(self, size: int) -> bool:
        """Whether one more frame of `size` bytes fits in the bound."""
        return self._frames < self.max_frames and self._bytes + size <= self.max_bytes

    @property
    def pending(self) -> tuple[int, int]:
        """(frames, bytes) queued or being written."""
        return self._frames, self._bytes

    def finish(self, grace: float) -> None:
        """Give the queue up to `grace` seconds to reach the client, then shut the socket regardless:
        a client that is not reading does not keep anything alive."""
        with self._done:
            self._closing = True
            self._done.notify_all()
            self._done.wait_for(lambda: self._frames == 0 or self._closed, timeout=grace)
            self._shut()

    def _shut(self) -> None:
        """Shut the real socket: a write blocked on it fails at once, and its reader sees the end."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._done.notify_all()

    def _write(self) -> None:
        while True:
            with self._done:
                self._done.wait_for(lambda: self._queue or self._closing or self._closed)
                if self._closed or not self._queue:
                    self._shut()
                    return
                chunks = list(self._queue)
                self._queue.clear()
            data = b"".join(chunks)
            try:
                self._sock.sendall(data)
            except OSError:
                with self._done:
                    self._queue.clear()
                    self._frames = self._bytes = 0
                    self._shut()
                return
            with self._done:
                self._frames -= len(chunks)
                self._bytes -= len(data)
                self._done.notify_all()
