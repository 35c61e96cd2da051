"""Broadcast: one frame to every socket of a session. A REST post to a session with N sockets open;
time from sending the post to each socket receiving its `user_message` frame, through chat_service
under its production gunicorn config (one gevent worker).

    python bench/broadcast.py --sockets 1000 --messages 20

The client end is one thread and a selector over raw sockets (no thread per socket), so the figure is
the server's fan-out, not the bench's own scheduling. Target: p99 <= 250 ms at 1,000 sockets.
"""

from __future__ import annotations

import argparse
import selectors
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask_migrate import upgrade

from bench.ws_capacity import open_idle_socket
from chat_service import create_app
from shared.auth import mint_token
from shared.open_files import raise_open_files_limit
from tests.processes import gunicorn_process

SECRET = "bench-secret-that-is-long-enough-for-hs256-000"
TARGET_P99_MS = 250


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20)
    args = parser.parse_args()
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    raise_open_files_limit(args.sockets + 1000)

    with tempfile.TemporaryDirectory() as tmp:
        environ = {
            "DATABASE_URL": f"sqlite:///{tmp}/bench.sqlite3",
            "JWT_SECRET": SECRET,
            "LOG_LEVEL": "WARNING",
            "WS_PING_INTERVAL": "600",
            # Fan-out, not the per-user bounds: every socket and post here is the one bench user's.
            "LIMIT_SOCKETS": "0",
            "RATE_LIMITS": "false",
            "OUTBOX_WORKER": "false",
            "WEB_CONCURRENCY": "1",
        }
        with create_app(environ).app_context():
            upgrade()
        token = mint_token("bench-user", config={"JWT_SECRET": SECRET})
        headers = {"Authorization": f"Bearer {token}"}
        worker = ["-c", "chat_service/gunicorn.conf.py", "--worker-connections", str(args.sockets + 1000)]
        with gunicorn_process("chat_service:create_app()", environ, worker=worker) as server:
            post = requests.post(f"{server.url}/api/chat/session", json={}, headers=headers, timeout=5)
            sid = post.json()["data"]["session_id"]
            port = int(server.url.rsplit(":", 1)[1])
            sockets = [open_idle_socket(port, f"/ws/{sid}", token) for _ in range(args.sockets)]
            selector = selectors.DefaultSelector()
            for conn in sockets:
                conn.setblocking(False)
                selector.register(conn, selectors.EVENT_READ)
            time.sleep(1)  # every socket subscribed before the first post
            for key, _ in selector.select(timeout=0):  # anything sent on connect
                key.fileobj.recv(65536)
            latencies: list[float] = []
            missing = 0
            session = requests.Session()
            try:
                for i in range(args.messages):
                    body = {"session_id": sid, "content": f"broadcast {i}"}
                    received: dict[int, bytes] = {}
                    started = time.perf_counter()
                    poster = threading.Thread(
                        target=session.post,
                        args=(f"{server.url}/api/chat/message",),
                        kwargs={"json": body, "headers": headers, "timeout": 10},
                    )
                    poster.start()
                    deadline = started + 10
                    while len(received) < len(sockets) and time.perf_counter() < deadline:
                        for key, _ in selector.select(timeout=0.5):
                            data = key.fileobj.recv(65536)
                            fd = key.fileobj.fileno()
                            if fd not in received:
                                latencies.append((time.perf_counter() - started) * 1000)
                                received[fd] = b""
                            received[fd] += data
                    poster.join()
                    missing += len(sockets) - sum(b"user_message" in data for data in received.values())
            finally:
                session.close()
                selector.close()
                for conn in sockets:
                    conn.close()
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"{args.messages} frames x {args.sockets} sockets = {len(ordered)} deliveries, from the REST post:")
    print(f"p50 {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms, max {ordered[-1]:.1f} ms")
    met = missing == 0 and p99 <= TARGET_P99_MS
    print(
        f"target: every socket gets every frame ({missing} missing), p99 <= {TARGET_P99_MS} ms: "
        f"{'MET' if met else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
