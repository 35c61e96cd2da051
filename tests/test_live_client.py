"""The test suite's WebSocket client reads frames that arrive in the same packet as the handshake."""

from __future__ import annotations

import json
import socket
import threading

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from tests.live import Socket


def test_frames_sent_with_the_handshake_response_are_not_lost():
    """A server that accepts, sends an error frame and closes, all in one write (a refused session)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_once() -> None:
        conn, _ = listener.accept()
        with conn:
            server = WSConnection(ConnectionType.SERVER)
            while True:
                server.receive_data(conn.recv(4096))
                if any(isinstance(event, Request) for event in server.events()):
                    break
            frame = json.dumps({"type": "error", "code": 7001})
            conn.sendall(
                server.send(AcceptConnection())
                + server.send(TextMessage(data=frame))
                + server.send(CloseConnection(code=4404, reason="gone"))
            )
            conn.recv(4096)  # until the client closes its side

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    client = Socket(f"ws://127.0.0.1:{listener.getsockname()[1]}/ws/x")
    try:
        assert client.next()["code"] == 7001
        assert client.closed_with() == 4404
    finally:
        client.close()
        thread.join(timeout=5)
        listener.close()
