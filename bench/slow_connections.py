"""Connection abuse: 200 idle, 200 header-trickling and 200 body-trickling connections held against each
service under its production gunicorn config for 30 s, while a client times ordinary REST requests.

    python bench/slow_connections.py [--connections 200] [--seconds 30] [--service conversation_service]

The slow clients (tests/slow_clients.py) send one more byte every second and never finish a request; a
connection the server closes is opened again at once, so `--connections` of each kind stay open. The
REST client GETs a stored record (chat session / conversation record, a database read behind a JWT) on
a fresh connection every 0.2 s, each bounded by 5 s (the slow bodies carry another user's token, so
they are requests the server would serve). Target: REST p99 within 1 s while the slow
connections are open, and no REST request failed. Also printed: how long the server let each kind of
slow connection live (its header and body timeouts).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import requests
from _support import ROOT, SECRET, command_line, gunicorn

from shared.auth import mint_token
from tests.slow_clients import KINDS, SlowClients, probe

TARGET_MS = 1000
SERVICES = {
    # service: (app, gunicorn workers by default in its config, create path, read path from the answer)
    "chat_service": ("chat_service:create_app()", 1, "/api/chat/session", "/api/chat/sessions/{session_id}"),
    "conversation_service": (
        "conversation_service:create_app()",
        2,
        "/api/ai/conversation",
        "/api/ai/conversation/{id}",
    ),
}


def migrate(service: str, database_url: str) -> None:
    """`service`'s migrations, up to head, on `database_url`."""
    import importlib

    from flask_migrate import upgrade

    module = importlib.import_module(service)
    environ = {"DATABASE_URL": database_url, "JWT_SECRET": SECRET, "LOG_LEVEL": "WARNING"}
    with module.create_app({**environ, "OUTBOX_WORKER": "false"}).app_context():
        upgrade()


def run(service: str, args, tmp: Path) -> bool:
    app, workers, create_path, read_path = SERVICES[service]
    database_url = f"sqlite:///{tmp}/{service}.sqlite3"
    migrate(service, database_url)
    environ = {
        "DATABASE_URL": database_url,
        "JWT_SECRET": SECRET,
        "LOG_LEVEL": "WARNING",
        "OUTBOX_WORKER": "false",
    }
    headers = {"Authorization": f"Bearer {mint_token('bench-user', config={'JWT_SECRET': SECRET})}"}
    # The slow clients are another user: their requests count against their own rate limits only.
    attacker = {"Authorization": f"Bearer {mint_token('attacker', config={'JWT_SECRET': SECRET})}"}
    options = ["-c", str(ROOT / service / "gunicorn.conf.py")]
    log = tmp / f"{service}.log"
    with gunicorn(app, environ, options, log, workers=workers) as base:
        created = requests.post(base + create_path, json={"title": "slow"}, headers=headers, timeout=5)
        url = base + read_path.format(**created.json()["data"])
        quiet = probe(url, headers, 5)
        started = time.monotonic()
        with SlowClients(base, args.connections, body_path=create_path, headers=attacker) as slow:
            opened_in = time.monotonic() - started
            loaded = probe(url, headers, args.seconds)
            open_at_end = slow.open_now
        stats = slow.stats
    worker_class = "gevent" if "gevent" in log.read_text() else "gthread"
    print(f"\n{service}: gunicorn -c {service}/gunicorn.conf.py ({workers} worker(s), {worker_class})")
    print(
        f"  {args.connections} connections of each kind opened in {opened_in:.1f} s; "
        f"open at the end: {open_at_end}"
    )
    for kind in KINDS:
        s = stats[kind]
        life = f"median {statistics.median(s.lifetimes):.1f} s" if s.lifetimes else "none closed"
        print(
            f"  {kind:8} opened {s.opened:5d}, refused {s.refused:4d}, closed by the server "
            f"{s.closed:5d} (lifetime {life})"
        )
    for name, probes in (("no slow connections", quiet), ("slow connections open", loaded)):
        print(
            f"  REST GET, {name:22}: {len(probes.latencies):4d} requests, p50 {probes.median:7.1f} ms, "
            f"p99 {probes.quantile(99):7.1f} ms, max {max(probes.latencies, default=float('nan')):7.1f} ms, "
            f"failed {len(probes.failures)} {sorted(set(probes.failures))}"
        )
    met = loaded.quantile(99) <= TARGET_MS and not loaded.failures
    print(
        f"  target: REST p99 <= {TARGET_MS} ms and no failure while they are open: "
        f"{'MET' if met else 'MISSED'} (p99 {loaded.quantile(99):.1f} ms, {len(loaded.failures)} failed)"
    )
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=200, help="slow connections of each kind")
    parser.add_argument("--seconds", type=int, default=30, help="how long they are held")
    parser.add_argument("--service", choices=list(SERVICES), action="append", help="default: both")
    args = parser.parse_args()
    print("command:", command_line())
    with tempfile.TemporaryDirectory(prefix="bench-slow-") as tmp:
        results = [run(service, args, Path(tmp)) for service in args.service or list(SERVICES)]
    print(f"\nall: {'MET' if all(results) else 'MISSED'}")


if __name__ == "__main__":
    main()
