"""A socket's one writer: every byte sent to a WebSocket client (frames, pings, pongs, the close frame)
goes through here. What the kernel takes at once is written at once, without waiting; the rest is
queued and written by one writer (a greenlet or thread, started when needed), so no two greenlets ever
write to the same socket and a client that stops reading blocks nobody but its own writer.

`Outbox` stands in for the client's socket under simple-websocket (it is put in the WSGI environ before
the handshake): `send` queues, `recv` reads the real socket. The queue's bound applies to the app's
frames (`has_room`); what simple-websocket itself sends (pings, pongs, close) is tiny and always taken.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections import deque

from chat_service.live.background import spawn


class Outbox:
    def __init__(self, sock: socket.socket, *, max_frames: int, max_bytes: int) -> None:
        self._sock = sock
        # The OS socket under gevent's cooperative one: a non-blocking `send` on it never yields.
        self._raw = getattr(sock, "_sock", sock)
        self.max_frames, self.max_bytes = max_frames, max_bytes
        self._queue: deque[bytes] = deque()
        self._frames = self._bytes = 0  # queued or being written
        self._done = threading.Condition()
        self._closing = False  # no more writes are taken; the writer ends once the queue is sent
        self._closed = False  # the real socket is shut
        self._writer: object | None = None  # the running writer (thread or greenlet), if any

    # -- the socket interface simple-websocket uses ------------------------------------------------------

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv(self, size: int) -> bytes:
        return self._sock.recv(size)

    def send(self, data: bytes) -> int:
        """Queue `data` for the writer; never blocks. After close, bytes are dropped."""
        size = len(data)
        with self._done:
            if self._closing:
                return size
            if self._writer is None:  # nothing queued: try to write at once, without waiting
                data = self._send_now(data)
                if not data:
                    return size
            self._queue.append(bytes(data))
            self._frames += 1
            self._bytes += len(data)
            if self._writer is None:
                self._writer = spawn(self._write, "ws-writer")
        return size

    sendall = send

    def _send_now(self, data: bytes) -> bytes:
        """Write what the kernel takes right now (never waiting); what is left, for the writer."""
        try:
            sent = self._raw.send(data, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return data
        except OSError:
            return data  # the writer meets the same error and shuts the socket
        return data[sent:]

    def close(self) -> None:
        """Take no more writes; the writer sends what is queued, then shuts the socket."""
        with self._done:
            self._closing = True
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
        a client that is not reading does not keep anything alive. One that took nothing for the whole
        grace gets a reset: a shutdown only queues its FIN behind what it is not reading, and a client
        still flooding its side kept such a connection (and this handler's socket) open for minutes."""
        with self._done:
            self._closing = True
            sent = self._done.wait_for(lambda: self._frames == 0 or self._closed, timeout=grace)
            if not sent:
                self._reset()
            self._shut()

    def _reset(self) -> None:
        """Close the real socket with a reset (SO_LINGER 0): what is queued either way is dropped."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self._sock.close()
        self._done.notify_all()

    def _shut(self) -> None:
        """Shut the real socket: a write blocked on it fails at once, and its reader sees the end."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._done.notify_all()

    def _write(self) -> None:
        """Send what is queued, then end: an idle socket keeps no writer (it costs memory per socket);
        the next `send` starts one again."""
        while True:
            with self._done:
                if self._closed or (self._closing and not self._queue):
                    self._writer = None
                    self._shut()
                    return
                if not self._queue:
                    self._writer = None
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
                    self._writer = None
                    self._shut()
                return
            with self._done:
                self._frames -= len(chunks)
                self._bytes -= len(data)
                self._done.notify_all()
