"""A client that stops reading: what it costs the server. The client floods `ping` frames and never reads
(the repro of the slow-consumer report: 300k pings left +50 MiB in the worker and a socket that never
closed), under chat_service's production gunicorn config with its default queue bounds.

    python bench/slow_consumer.py [--pings 300000]

Targets: each socket is given up while its client is still connected (`ws_open_sockets` back to 0),
and the worker does not keep what a stalled client cost: after the first client, later ones add at
most 5 MiB of RSS between them (the first raises the allocator's high-water mark once: it processed
the pings the kernel buffers let through, a quarter of a million on loopback).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._support import SECRET, command_line, migrate
from shared.auth import mint_token
from tests.live_probe import RawSocket, only_worker, open_sockets, rss_bytes
from tests.processes import gunicorn_process

PING_INTERVAL = 5
TARGET_MIB = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3, help="stalled clients, one after the other")
    args = parser.parse_args()
    print("command:", command_line())
    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{tmp}/bench.sqlite3"
        migrate(database_url)
        environ = {
            "DATABASE_URL": database_url,
            "JWT_SECRET": SECRET,
            "LOG_LEVEL": "WARNING",
            "WS_PING_INTERVAL": str(PING_INTERVAL),
        }
        token = mint_token("bench-user", config={"JWT_SECRET": SECRET})
        headers = {"Authorization": f"Bearer {token}"}
        config = ["-c", "chat_service/gunicorn.conf.py"]
        with gunicorn_process("chat_service:create_app()", environ, worker=config) as server:
            worker = only_worker(server.process.pid)
            response = requests.post(f"{server.url}/api/chat/session", json={}, headers=headers, timeout=5)
            session_id = response.json()["data"]["session_id"]
            url = server.url.replace("http", "ws", 1) + f"/ws/{session_id}"
            rss = [rss_bytes(worker)]
            rounds = []
            for _ in range(args.rounds):
                client = RawSocket(url, headers)
                started = time.monotonic()
                sent = client.flood({"type": "ping"}, args.pings)
                flooded = time.monotonic() - started
                given_up = None
                while time.monotonic() - started < flooded + PING_INTERVAL * 3:
                    if open_sockets(server.url) == 0:
                        given_up = time.monotonic() - started
                        break
                    time.sleep(0.1)
                client.close()
                time.sleep(PING_INTERVAL + 1)
                rss.append(rss_bytes(worker))
                rounds.append((sent, flooded, given_up, open_sockets(server.url)))
    mib = 1024 * 1024
    for number, (sent, flooded, given_up, sockets_after) in enumerate(rounds, start=1):
        closed = f"{given_up:.1f} s after its flood began" if given_up is not None else "never"
        print(
            f"client {number}: {sent:,} pings sent before the server stopped reading ({flooded:.1f} s); "
            f"socket given up while still connected: {closed}; ws_open_sockets after: {sockets_after:g}; "
            f"worker RSS after it left {rss[number] / mib:.1f} MiB"
        )
    print(f"worker RSS before any: {rss[0] / mib:.1f} MiB")
    growth = (rss[-1] - rss[1]) / mib
    given_up_all = all(r[2] is not None and r[3] == 0 for r in rounds)
    met = given_up_all and growth <= TARGET_MIB
    print(
        f"targets: every socket given up and the gauge back to 0; RSS growth after the first client "
        f"{growth:+.1f} MiB (<= {TARGET_MIB}: no leak): {'MET' if met else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
