"""A real HTTP server on loopback for tests that need one (WebSockets), and a socket client."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from simple_websocket import Client, ConnectionClosed
from werkzeug.serving import make_server


@contextmanager
def serve(app: Flask, port: int = 0) -> Iterator[str]:
    """Serve `app` on loopback, on `port` or a free one; yields its base URL (`http://127.0.0.1:PORT`)."""
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def another_origin(html: str = "<!doctype html><title>another site</title>") -> Iterator[str]:
    """A static page on a free loopback port, an origin of its own (`http://127.0.0.1:PORT`): what a
    browser test uses as a frontend elsewhere. Loopback, not a made-up host: Chromium lets a page reach
    loopback sockets only from a loopback origin (Private Network Access)."""
    site = Flask("another_origin", static_folder=None)
    site.add_url_rule("/", "page", lambda: (html, 200, {"Content-Type": "text/html; charset=utf-8"}))
    with serve(site) as url:
        yield url


class DrainingClient(Client):
    """simple-websocket's client, also taking the frames that arrived with the handshake response.

    Upstream, `Client.handshake` takes only the first event (the 101) and leaves any frames read with it
    in wsproto's buffer until more bytes arrive; a server that answers and closes at once (a refused
    session: an error frame, then close) then looks like a silent close (1005). Browsers read them.
    """

    def handshake(self) -> None:
        super().handshake()
        if not self._handle_events():
            # The close came with the handshake: answer it by shutting our side, keep the frames.
            self.connected = True  # Base.__init__ refuses to start otherwise; the reader then sees EOF
            self.sock.shutdown(socket.SHUT_WR)


class Socket:
    """A WebSocket client that reads the server's JSON frames."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self.client = DrainingClient.connect(url, **kwargs)
        self.seen: list[dict] = []

    def send(self, payload: dict | str) -> None:
        self.client.send(payload if isinstance(payload, str) else json.dumps(payload))

    def next(self, timeout: float = 5) -> dict:
        raw = self.client.receive(timeout=timeout)
        if raw is None:
            raise TimeoutError(f"no frame within {timeout}s; seen {[f['type'] for f in self.seen]}")
        frame = json.loads(raw)
        self.seen.append(frame)
        return frame

    def until(self, kind: str, timeout: float = 10) -> list[dict]:
        """Frames up to and including the first of type `kind`."""
        frames, deadline = [], time.monotonic() + timeout
        while True:
            frames.append(self.next(timeout=max(0.01, deadline - time.monotonic())))
            if frames[-1]["type"] == kind:
                return frames

    def closed_with(self, timeout: float = 5) -> int | None:
        """The close code once the server closes the socket."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.client.receive(timeout=0.1)
        except ConnectionClosed:
            return self.client.close_reason
        raise TimeoutError("the socket stayed open")

    def close(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            self.client.close()
