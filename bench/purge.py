"""Purge at scale: a user's 1,000 deleted sessions with 100,000 messages, older than the window.

On each backend (its own chat_service database, created and dropped here; conversation_service serves
from a SQLite file on loopback for the cascade), measures `chat_service.purge.purge()` in batches of
PURGE_BATCH_SIZE: rows per second of the purge itself (messages, then the sessions queued), then of the
cascade (each session's record and row), the longest batch transaction (the longest any lock of the
purge is held), and meanwhile the latency of other users' live writes (POST /api/chat/message) and
reads (GET messages) through the app, against a baseline measured just before. Live data must stay.

    python bench/purge.py                                  # PostgreSQL at BENCH_POSTGRES_URL
    python bench/purge.py --mysql-url mysql+pymysql://root@127.0.0.1:3306/test   # and MariaDB
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import sys
import threading
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._support import SECRET, command_line, percentile
from bench.paging import create_database, drop_database
from chat_service import create_app as create_chat_app
from chat_service import live, purge
from chat_service.extensions import db as chat_db
from conversation_service import create_app as create_conversation_app
from shared.auth import mint_token
from tests.live import serve

PURGED_USER = "542738228948509999"
LIVE_USER = "542738228948500480"
TARGET_LOCK_MS = 100  # the longest batch transaction
TARGET_LIVE_MS = 250  # the slowest live write or read while the purge runs


def environ(url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "JWT_SECRET": SECRET,
        "LOG_LEVEL": "WARNING",
        "OUTBOX_WORKER": "false",
        "LIMIT_REQUESTS": "off",  # the load makes more calls than one user's 600 a minute
    } | extra


def migrate(app) -> None:
    from flask_migrate import upgrade

    with app.app_context():
        upgrade()


def fill(engine: sa.Engine, sessions: int, per_session: int, live_sessions: int, live_messages: int) -> None:
    """PURGED_USER's `sessions` sessions of `per_session` messages, deleted 40 days ago (messages with
    their session's deleted_at), and LIVE_USER's live sessions, in bulk SQL."""
    postgres = engine.dialect.name == "postgresql"
    uuid_sql = "gen_random_uuid()::text" if postgres else "UUID()"
    series = (
        (lambda n: f"generate_series(1, {int(n)}) AS g(n)") if postgres else (lambda n: f"seq_1_to_{int(n)}")
    )
    deleted = "timestamp '2025-01-01 00:00:00'" if postgres else "TIMESTAMP '2025-01-01 00:00:00'"
    with engine.begin() as connection:
        for user, count, is_deleted, when in (
            (PURGED_USER, sessions, "true", deleted),
            (LIVE_USER, live_sessions, "false", "NULL"),
        ):
            connection.execute(
                sa.text(
                    "INSERT INTO chat_sessions (session_id, user_id, title, message_count, created_at,"
                    f" updated_at, is_deleted, deleted_at) SELECT {uuid_sql}, :user, 'bench', 0,"
                    f" {deleted}, {deleted}, {is_deleted}, {when} FROM {series(count)}"
                ),
                {"user": user},
            )
        for user, count in ((PURGED_USER, per_session), (LIVE_USER, live_messages)):
            connection.execute(
                sa.text(
                    "INSERT INTO chat_messages (session_id, role, content, created_at, updated_at,"
                    " is_deleted, deleted_at) SELECT s.session_id, 'user', 'a bench message of some length',"
                    " s.created_at, s.created_at, s.is_deleted, s.deleted_at FROM chat_sessions s"
                    f" CROSS JOIN {series(count)} WHERE s.user_id = :user"
                ),
                {"user": user},
            )
        connection.execute(
            sa.text(
                "UPDATE chat_sessions SET message_count = (SELECT count(*) FROM chat_messages m"
                " WHERE m.session_id = chat_sessions.session_id)"
            )
        )
    with engine.connect() as connection:
        for table in ("chat_sessions", "chat_messages"):
            connection.execute(sa.text(f"ANALYZE {'' if postgres else 'TABLE '}{table}"))


def _load(url: str, session_ids: list[str], writers: int, readers: int, rate: float, stop, results) -> None:
    """In a process of its own (no GIL shared with the purge): writers and readers of LIVE_USER's live
    sessions, each thread its own test client making `rate` calls a second, timing every call."""
    import logging

    logging.disable(logging.INFO)
    app = create_chat_app(environ(url))
    token = mint_token(LIVE_USER, config={"JWT_SECRET": SECRET})
    timings: dict[str, list[float]] = {"writes": [], "reads": []}
    errors: list[str] = []
    written = [0]

    def run(writing: bool, index: int) -> None:
        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}
        sid = session_ids[index % len(session_ids)]
        while not stop.is_set():
            started = time.perf_counter()
            if writing:
                body = {"session_id": sid, "content": "live write during the purge"}
                response = client.post("/api/chat/message", json=body, headers=headers)
            else:
                response = client.get(f"/api/chat/sessions/{sid}/messages?order=desc", headers=headers)
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                errors.append(
                    f"{'write' if writing else 'read'} {response.status_code}: {response.get_data()[:120]}"
                )
            elif writing:
                written[0] += 1
            timings["writes" if writing else "reads"].append(elapsed * 1000)
            time.sleep(max(0.0, 1 / rate - elapsed))

    threads = [threading.Thread(target=run, args=(True, i)) for i in range(writers)]
    threads += [threading.Thread(target=run, args=(False, i)) for i in range(readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put((timings["writes"], timings["reads"], errors, written[0]))


class Load:
    """`_load` in a child process, from `start()` to `stop()`."""

    def __init__(self, url: str, session_ids: list[str], args) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop, self._results = context.Event(), context.Queue()
        load_args = (url, session_ids, args.writers, args.readers, args.rate, self._stop, self._results)
        self._process = context.Process(target=_load, args=load_args, daemon=True)
        self.writes: list[float] = []
        self.reads: list[float] = []
        self.errors: list[str] = []
        self.written = 0

    def start(self, warm_up: float = 2.0) -> Load:
        self._process.start()
        time.sleep(warm_up)  # the child imports and builds its app
        return self

    def stop(self) -> None:
        self._stop.set()
        self.writes, self.reads, self.errors, self.written = self._results.get(timeout=300)
        self._process.join(timeout=30)


def summary(label: str, values: list[float]) -> str:
    ordered = sorted(values)
    return (
        f"{label}: n={len(ordered)} p50 {percentile(ordered, 50):.1f} ms,"
        f" p99 {percentile(ordered, 99):.1f} ms, max {ordered[-1] if ordered else float('nan'):.1f} ms"
    )


def run_backend(server_url: str, args) -> dict:
    backend = make_url(server_url).get_backend_name()
    name = f"bench_purge_{os.getpid()}_{secrets.token_hex(3)}"
    url = create_database(server_url, name)
    records_url = create_database(server_url, f"{name}_records")
    print(f"\n== {backend} ({url.rsplit('@', 1)[-1]}) ==")
    records = create_conversation_app(environ(records_url))
    migrate(records)
    try:
        with serve(records) as conversation_url:
            return measure(backend, url, args, conversation_url)
    finally:
        drop_database(server_url, name)
        drop_database(server_url, f"{name}_records")


def measure(backend: str, url: str, args, conversation_url: str) -> dict:
    settings = {"CONVERSATION_SERVICE_URL": conversation_url, "PURGE_BATCH_SIZE": str(args.batch_size)}
    app = create_chat_app(environ(url, **settings))
    migrate(app)
    with app.app_context():
        engine = chat_db.engine
    started = time.perf_counter()
    fill(engine, args.sessions, args.messages // args.sessions, args.live_sessions, args.live_messages)
    print(f"filled in {time.perf_counter() - started:.1f} s")
    with engine.connect() as connection:
        live_ids = [
            r[0]
            for r in connection.execute(
                sa.text("SELECT session_id FROM chat_sessions WHERE user_id = :u ORDER BY session_id"),
                {"u": LIVE_USER},
            )
        ]
        total = connection.execute(sa.text("SELECT count(*) FROM chat_messages")).scalar()
    print(f"{total} messages: {args.messages} to purge in {args.sessions} sessions, the rest live")

    baseline = Load(url, live_ids, args).start()
    time.sleep(args.baseline_seconds)
    baseline.stop()
    load = Load(url, live_ids, args).start()
    with app.app_context():
        started = time.perf_counter()
        counts = purge.purge(deliver=False)
        purged_in = time.perf_counter() - started
        started = time.perf_counter()
        purge._deliver_now()
        cascade_in = time.perf_counter() - started
    load.stop()
    with engine.connect() as connection:
        left = connection.execute(
            sa.text("SELECT count(*) FROM chat_sessions WHERE user_id = :u"), {"u": PURGED_USER}
        ).scalar()
        live_left = connection.execute(
            sa.text(
                "SELECT count(*) FROM chat_messages m JOIN chat_sessions s ON s.session_id = m.session_id"
                " WHERE s.user_id = :u"
            ),
            {"u": LIVE_USER},
        ).scalar()
    purged_rows = counts.session_messages + counts.messages + counts.sessions_queued
    rate = purged_rows / purged_in
    print(f"purge: {counts.line()}")
    print(
        f"purge: {purged_rows} rows ({counts.session_messages + counts.messages} messages,"
        f" {counts.sessions_queued} sessions queued) in {purged_in:.2f} s = {rate:,.0f} rows/s;"
        f" longest batch transaction {counts.longest_batch_ms:.1f} ms (batch size {args.batch_size})"
    )
    print(
        f"cascade: {args.sessions - left} sessions (record + row) in {cascade_in:.2f} s ="
        f" {(args.sessions - left) / cascade_in:,.0f} sessions/s; {left} left"
    )
    print(summary("live writes before", baseline.writes))
    print(summary("live writes during", load.writes))
    print(summary("live reads before", baseline.reads))
    print(summary("live reads during", load.reads))
    expected_live = args.live_sessions * args.live_messages + baseline.written + load.written
    print(f"live messages kept: {live_left} of {expected_live}; failed calls: {len(load.errors)}")
    for error in sorted(set(baseline.errors + load.errors))[:5]:
        print(f"  failed: {error}")
    live.of(app).close()
    engine.dispose()
    return {
        "backend": backend,
        "rate": rate,
        "lock": counts.longest_batch_ms,
        "write_max": max(load.writes, default=float("nan")),
        "read_max": max(load.reads, default=float("nan")),
        "complete": left == 0 and live_left == expected_live and not load.errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
        help="a server URL whose user may create databases ('' to skip)",
    )
    parser.add_argument(
        "--mysql-url", default=os.environ.get("BENCH_MYSQL_URL", ""), help="MariaDB server URL"
    )
    parser.add_argument("--sessions", type=int, default=1_000)
    parser.add_argument("--messages", type=int, default=100_000, help="in all, over --sessions")
    parser.add_argument("--batch-size", type=int, default=500, help="PURGE_BATCH_SIZE")
    parser.add_argument("--live-sessions", type=int, default=20)
    parser.add_argument("--live-messages", type=int, default=500, help="per live session")
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=20, help="calls a second of each writer and reader")
    parser.add_argument("--baseline-seconds", type=float, default=5)
    args = parser.parse_args()
    print("command:", command_line())
    print(
        f"machine: {os.cpu_count()} CPUs; {args.writers} writers and {args.readers} readers of live sessions"
    )

    results = [run_backend(url, args) for url in (args.postgres_url, args.mysql_url) if url]

    print("\n== targets ==")
    ok = {True: "MET", False: "MISSED"}
    for r in results:
        print(
            f"  {r['backend']}: purge {r['rate']:,.0f} rows/s; all purged, live data intact:"
            f" {ok[r['complete']]}"
        )
        print(
            f"  {r['backend']}: longest batch transaction {r['lock']:.1f} ms (target <= {TARGET_LOCK_MS} ms):"
            f" {ok[r['lock'] <= TARGET_LOCK_MS]}"
        )
        print(
            f"  {r['backend']}: slowest live write {r['write_max']:.1f} ms, read {r['read_max']:.1f} ms"
            f" during the purge (target <= {TARGET_LIVE_MS} ms):"
            f" {ok[max(r['write_max'], r['read_max']) <= TARGET_LIVE_MS]}"
        )


if __name__ == "__main__":
    main()
