"""Relay overhead: from the AI provider writing the first piece of a reply to the client receiving it as
a `delta` frame, through chat_service under its production gunicorn config (gevent) and a fake Dify.

    python bench/relay_latency.py --turns 50
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
from simple_websocket import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask_migrate import upgrade

from chat_service import create_app
from shared.auth import mint_token
from tests.fakes.dify import DifyTurn, FakeDify
from tests.processes import gunicorn_process

TARGET_P50_MS = 5.0
SECRET = "bench-secret-that-is-long-enough-for-hs256-000"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=50)
    args = parser.parse_args()
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))

    with tempfile.TemporaryDirectory() as tmp, FakeDify() as dify:
        environ = {
            "DATABASE_URL": f"sqlite:///{tmp}/bench.sqlite3",
            "JWT_SECRET": SECRET,
            "LOG_LEVEL": "WARNING",
            "AI_PROVIDER": "dify",
            "DIFY_API_URL": dify.url,
            "DIFY_API_KEY": dify.api_key,
            "CONVERSATION_SERVICE_URL": "http://127.0.0.1:1",
            "LINK_RETRY_DELAYS": "",
        }
        with create_app(environ).app_context():
            upgrade()
        token = mint_token("bench-user", config={"JWT_SECRET": SECRET})
        worker = ["-c", "chat_service/gunicorn.conf.py"]
        with gunicorn_process("chat_service:create_app()", environ, worker=worker) as server:
            headers = {"Authorization": f"Bearer {token}"}
            sid = requests.post(f"{server.url}/api/chat/session", json={}, headers=headers, timeout=5).json()
            client = Client.connect(
                server.url.replace("http", "ws") + f"/ws/{sid['data']['session_id']}", headers=headers
            )
            latencies = []
            try:
                for _ in range(args.turns):
                    turn = DifyTurn()
                    dify.script(
                        turn.stream([0.05, turn.message("Hello"), turn.message(" world"), turn.end()])
                    )
                    client.send(json.dumps({"type": "message", "content": "hi"}))
                    while True:
                        frame = json.loads(client.receive(timeout=10))
                        if frame["type"] == "delta":
                            received = time.monotonic()
                            break
                    while json.loads(client.receive(timeout=10))["type"] != "assistant_message":
                        pass
                    latencies.append((received - dify.chat_requests[-1].writes[0]) * 1000)
            finally:
                client.close()
    ordered = sorted(latencies)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    print(f"provider's first piece -> client's first delta, {len(ordered)} turns:")
    p50 = statistics.median(ordered)
    print(f"p50 {p50:.2f} ms, p95 {p95:.2f} ms, max {ordered[-1]:.2f} ms")
    print(f"target p50 <= {TARGET_P50_MS} ms: {'MET' if p50 <= TARGET_P50_MS else 'MISSED'}")


if __name__ == "__main__":
    main()
