"""Broadcast: one frame to every socket of a session. A REST post to a session with N sockets open;
time from sending the post to each socket receiving its `user_message` frame, through chat_service
under its production gunicorn config.

    python bench/broadcast.py --sockets 100 --messages 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from simple_websocket import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask_migrate import upgrade

from chat_service import create_app
from shared.auth import mint_token
from tests.processes import gunicorn_process

SECRET = "bench-secret-that-is-long-enough-for-hs256-000"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=100)
    parser.add_argument("--messages", type=int, default=30)
    args = parser.parse_args()
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))

    with tempfile.TemporaryDirectory() as tmp:
        environ = {
            "DATABASE_URL": f"sqlite:///{tmp}/bench.sqlite3",
            "JWT_SECRET": SECRET,
            "LOG_LEVEL": "WARNING",
        }
        with create_app(environ).app_context():
            upgrade()
        token = mint_token("bench-user", config={"JWT_SECRET": SECRET})
        headers = {"Authorization": f"Bearer {token}"}
        with gunicorn_process(
            "chat_service:create_app()", environ, worker=["-c", "chat_service/gunicorn.conf.py"]
        ) as server:
            sid = requests.post(f"{server.url}/api/chat/session", json={}, headers=headers, timeout=5).json()[
                "data"
            ]["session_id"]
            url = server.url.replace("http", "ws") + f"/ws/{sid}"
            clients = [Client.connect(url, headers=headers) for _ in range(args.sockets)]
            for client in clients:  # every socket subscribed before the first post
                client.send(json.dumps({"type": "ping"}))
                while json.loads(client.receive(timeout=10))["type"] != "pong":
                    pass
            latencies: list[float] = []
            lock = threading.Lock()
            try:
                session = requests.Session()
                for i in range(args.messages):
                    arrived = threading.Barrier(args.sockets + 1)

                    def receive(client: Client, started: float, arrived: threading.Barrier) -> None:
                        frame = json.loads(client.receive(timeout=10))
                        assert frame["type"] == "user_message"
                        with lock:
                            latencies.append((time.perf_counter() - started) * 1000)
                        arrived.wait()

                    started = time.perf_counter()
                    threads = [threading.Thread(target=receive, args=(c, started, arrived)) for c in clients]
                    for thread in threads:
                        thread.start()
                    body = {"session_id": sid, "content": f"broadcast {i}"}
                    session.post(f"{server.url}/api/chat/message", json=body, headers=headers, timeout=5)
                    arrived.wait(timeout=15)
                    for thread in threads:
                        thread.join()
                session.close()
            finally:
                for client in clients:
                    client.close()
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"{args.messages} frames x {args.sockets} sockets = {len(ordered)} deliveries, from the REST post:")
    print(f"p50 {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms, max {ordered[-1]:.1f} ms")


if __name__ == "__main__":
    main()
