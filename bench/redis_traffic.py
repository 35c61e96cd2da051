"""Redis bytes written per AI reply, by reply length: the reply so far must cost Redis linear traffic.

chat_service under its production gunicorn config with `REDIS_URL`, the echo provider (one piece per
word, no delay); for each length, one turn, and Redis's `total_net_input_bytes` before and after.
Target: bytes grow linearly with the reply (per-character cost at the longest reply within 1.5x of
the shortest's); before the redesign every delta rewrote the whole reply (a 50k-character reply
wrote 127.5 MB).

    python bench/redis_traffic.py [--redis-url redis://127.0.0.1:6379/0] [--words 500,1500,5000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import requests
from simple_websocket import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._support import SECRET, command_line, migrate
from shared.auth import mint_token
from tests.processes import gunicorn_process

TARGET_RATIO = 1.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--words", default="500,1500,5000", help="reply lengths, in words of 6 characters")
    args = parser.parse_args()
    print("command:", command_line())
    import redis

    server_stats = redis.Redis.from_url(args.redis_url)
    lengths = [int(n) for n in args.words.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{tmp}/bench.sqlite3"
        migrate(database_url)
        environ = {
            "DATABASE_URL": database_url,
            "JWT_SECRET": SECRET,
            "LOG_LEVEL": "WARNING",
            "REDIS_URL": args.redis_url,
            "ECHO_DELAY_SECONDS": "0",
            "WS_MAX_MESSAGE_SIZE": str(4 * 1024 * 1024),
        }
        token = mint_token("bench-user", config={"JWT_SECRET": SECRET})
        headers = {"Authorization": f"Bearer {token}"}
        config = ["-c", "chat_service/gunicorn.conf.py"]
        with gunicorn_process("chat_service:create_app()", environ, worker=config, workers=1) as server:
            results = []
            for words in lengths:
                sid = requests.post(f"{server.url}/api/chat/session", json={}, headers=headers, timeout=5)
                session_id = sid.json()["data"]["session_id"]
                client = Client.connect(
                    server.url.replace("http", "ws") + f"/ws/{session_id}",
                    headers=headers,
                    max_message_size=8 * 1024 * 1024,
                )
                text = "word5 " * words
                before = server_stats.info("stats")["total_net_input_bytes"]
                client.send(json.dumps({"type": "message", "content": text}))
                while json.loads(client.receive(timeout=60))["type"] != "assistant_message":
                    pass
                after = server_stats.info("stats")["total_net_input_bytes"]
                client.close()
                results.append((len(text), words, after - before))
    print(f"{'reply chars':>12} {'pieces':>7} {'Redis bytes in':>15} {'bytes per char':>15}")
    for chars, pieces, written in results:
        print(f"{chars:>12,} {pieces:>7,} {written:>15,} {written / chars:>15.1f}")
    first, last = results[0][2] / results[0][0], results[-1][2] / results[-1][0]
    ratio = last / first
    verdict = "MET" if ratio <= TARGET_RATIO else "MISSED"
    print(f"per-character cost, longest / shortest reply: {ratio:.2f} (target <= {TARGET_RATIO}): {verdict}")


if __name__ == "__main__":
    main()
