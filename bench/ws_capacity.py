"""WebSocket capacity: REST latency of one chat_service worker with N idle sockets open, and memory
per socket, under a chosen gunicorn worker class.

    python bench/ws_capacity.py --worker-class gevent --sockets 10000
    python bench/ws_capacity.py --worker-class gthread --sockets 100
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask_migrate import upgrade

from chat_service import create_app
from shared.auth import mint_token
from shared.open_files import raise_open_files_limit
from tests.processes import gunicorn_process

TARGET_KIB = 60
SECRET = "bench-secret-that-is-long-enough-for-hs256-000"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def worker_pid(master_port: int) -> int:
    """The gunicorn worker serving `master_port` (the master's only child)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text().split()
        except OSError:
            continue
        if b"gunicorn" in cmdline and f"127.0.0.1:{master_port}".encode() in cmdline:
            parent = int(stat[3])
            if b"gunicorn" in Path(f"/proc/{parent}/cmdline").read_bytes():
                return int(entry.name)
    raise RuntimeError("worker not found")


def open_idle_socket(port: int, path: str, token: str) -> socket.socket:
    """A raw WebSocket handshake; the socket then just stays open, as an idle browser tab would."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    conn.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    response = conn.recv(4096)
    if not response.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(response[:200])
    return conn


def rest_latencies(url: str, token: str, requests_count: int, timeout: float) -> tuple[list[float], int]:
    session = requests.Session()
    headers = {"Authorization": f"Bearer {token}"}
    times, failures = [], 0
    for _ in range(requests_count):
        started = time.perf_counter()
        try:
            session.get(url, headers=headers, timeout=timeout).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
        except requests.RequestException:
            failures += 1
    session.close()
    return times, failures


def p99_of(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")


def summary(times: list[float]) -> str:
    if not times:
        return "no successful request"
    return f"p50 {statistics.median(times):.2f} ms, p99 {p99_of(times):.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker-class", default="gevent", choices=["gevent", "gthread"])
    parser.add_argument("--threads", type=int, default=8, help="gthread threads per worker")
    parser.add_argument("--sockets", type=int, default=1000)
    # Per measurement; p99 of 300 was its 3rd-slowest request, and moved 1.2x-5.4x between runs.
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=5.0, help="REST timeout, seconds")
    args = parser.parse_args()
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))

    with tempfile.TemporaryDirectory() as tmp:
        database = f"sqlite:///{tmp}/bench.sqlite3"
        environ = {
            "DATABASE_URL": database,
            "JWT_SECRET": SECRET,
            "LOG_LEVEL": "WARNING",
            "WS_PING_INTERVAL": "600",
            # Capacity, not the per-user bound: every socket here is the one bench user's.
            "LIMIT_SOCKETS": "0",
            "RATE_LIMITS": "false",
            "OUTBOX_WORKER": "false",  # no conversation_service to mirror to
        }
        app = create_app(environ)
        with app.app_context():
            upgrade()
        token = mint_token("bench-user", config={"JWT_SECRET": SECRET})
        config = ["--worker-class", args.worker_class]
        config += (
            ["--threads", str(args.threads)]
            if args.worker_class == "gthread"
            else ["--worker-connections", str(args.sockets + 1000)]
        )
        # This process holds the client end of every socket: its own open-files limit must allow them.
        raise_open_files_limit(args.sockets + 1000)
        with gunicorn_process("chat_service:create_app()", environ, worker=config) as server:
            url = server.url
            port = int(url.rsplit(":", 1)[1])
            headers = {"Authorization": f"Bearer {token}"}
            sid = requests.post(url + "/api/chat/session", json={}, headers=headers, timeout=5).json()[
                "data"
            ]["session_id"]
            target = f"{url}/api/chat/sessions/{sid}"
            pid = worker_pid(port)
            rest_latencies(target, token, 50, args.timeout)  # warm up
            idle, _ = rest_latencies(target, token, args.requests, args.timeout)
            before = rss_kib(pid)
            sockets, opened_at = [], time.perf_counter()
            try:
                for _ in range(args.sockets):
                    try:
                        sockets.append(open_idle_socket(port, f"/ws/{sid}", token))
                    except TimeoutError:
                        print(f"socket {len(sockets) + 1} got no handshake within 10 s: the worker is full")
                        break
                opened = time.perf_counter() - opened_at
                time.sleep(1)
                after = rss_kib(pid)
                loaded, failures = rest_latencies(target, token, args.requests, args.timeout)
            finally:
                for conn in sockets:
                    conn.close()
    per_socket = (after - before) / max(1, len(sockets))
    print(
        f"worker class: {args.worker_class}"
        + (f" ({args.threads} threads)" if args.worker_class == "gthread" else "")
    )
    print(f"REST GET session, no sockets:      {summary(idle)}")
    print(f"{len(sockets)} of {args.sockets} idle sockets opened in {opened:.2f} s")
    failed = f"{failures} of {args.requests} failed (timeout {args.timeout}s)"
    print(f"REST GET session, sockets open:    {summary(loaded)}, {failed}")
    print(f"worker RSS {before} KiB -> {after} KiB: {per_socket:.1f} KiB per socket")
    p99_ratio = p99_of(loaded) / p99_of(idle)
    met = len(sockets) == args.sockets and failures == 0 and per_socket <= TARGET_KIB and p99_ratio <= 2
    print(
        f"targets: all {args.sockets} held, REST p99 open/idle {p99_ratio:.2f} (<= 2), "
        f"{per_socket:.1f} KiB per socket (<= {TARGET_KIB}): {'MET' if met else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
