"""The export's memory and speed: a user with N messages exported through GET /api/chat/export.

chat_service runs under gunicorn as in production (one gevent worker), conversation_service beside it
(the export asks it for the records once per page of sessions). While the export streams, the chat
worker's resident memory (VmRSS in /proc) is sampled every 20 ms; the figure is its peak growth over
what the worker held before, against the target: at most 50 MiB extra, whatever N. Also messages/s and
MB/s as the client read them, and a check that the stream is whole (its end line's counts).

    python bench/export.py                               # 1,000,000 messages on SQLite (a few minutes)
    python bench/export.py --messages 100000             # quicker
    python bench/export.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    python bench/export.py --database-url mysql+pymysql://root@127.0.0.1:3306/test
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import requests
import sqlalchemy as sa
from _support import GEVENT_WORKER, SECRET, command_line, gunicorn, migrate

from shared.auth import mint_token

USER = "542738228948500480"
TARGET_MIB = 50
INSERT_BATCH = 10_000
CONTENT = "项目管理的第{}条消息: the quick brown fox jumps over the lazy dog. " * 2


# --- databases ------------------------------------------------------------------------------------


def _admin(server_url: str, statement: str) -> None:
    url = sa.make_url(server_url)
    if url.get_backend_name() == "postgresql":
        url = url.set(database="postgres")
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sa.text(statement))
    finally:
        engine.dispose()


@contextmanager
def database(server_url: str | None, tag: str, tmp: Path) -> Iterator[str]:
    """A fresh database: a SQLite file, or one of our own on the server at `server_url`, dropped after."""
    if not server_url:
        yield f"sqlite:///{tmp}/{tag}.sqlite3"
        return
    name = f"bench_{tag}_{os.getpid()}"
    postgres = sa.make_url(server_url).get_backend_name() == "postgresql"
    quoted = f'"{name}"' if postgres else f"`{name}`"
    _admin(server_url, f"CREATE DATABASE {quoted}" + ("" if postgres else " CHARACTER SET utf8mb4"))
    try:
        yield sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        _admin(server_url, f"DROP DATABASE IF EXISTS {quoted}" + (" WITH (FORCE)" if postgres else ""))


def migrate_conversations(database_url: str) -> None:
    from flask_migrate import upgrade

    from conversation_service import create_app

    environ = {"DATABASE_URL": database_url, "JWT_SECRET": SECRET, "OUTBOX_WORKER": "false"}
    with create_app(environ).app_context():
        upgrade()


def fill(database_url: str, sessions: int, messages: int) -> None:
    """USER's `sessions` sessions holding `messages` messages in all (every fifth a rated reply with
    usage), in bulk (Core inserts, the maintained counts set)."""
    engine = sa.create_engine(database_url)
    meta = sa.MetaData()
    meta.reflect(engine, only=["chat_sessions", "chat_messages"])
    session_table, message_table = meta.tables["chat_sessions"], meta.tables["chat_messages"]
    start = datetime(2025, 1, 1)
    ids = [str(uuid.uuid4()) for _ in range(sessions)]
    per_session = [messages // sessions + (1 if i < messages % sessions else 0) for i in range(sessions)]
    usage = json.dumps({"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42})
    with engine.begin() as connection:
        connection.execute(
            session_table.insert(),
            [
                {
                    "session_id": sid,
                    "user_id": USER,
                    "title": f"会话 {i}",
                    "message_count": per_session[i],
                    "created_at": start + timedelta(seconds=i),
                    "updated_at": start + timedelta(seconds=i),
                    "is_deleted": False,
                }
                for i, sid in enumerate(ids)
            ],
        )
    written = 0
    for sid, count in zip(ids, per_session, strict=True):
        for first in range(0, count, INSERT_BATCH):
            rows = []
            for n in range(first, min(count, first + INSERT_BATCH)):
                reply = n % 5 == 4
                moment = start + timedelta(milliseconds=written + n)
                rows.append(
                    {
                        "session_id": sid,
                        "role": "assistant" if reply else "user",
                        "content": CONTENT.format(n, n),
                        "created_at": moment,
                        "updated_at": moment,
                        "is_deleted": False,
                        "is_generated": reply,
                        "usage": usage if reply else None,
                        "feedback_rating": "like" if reply else None,
                    }
                )
            with engine.begin() as connection:
                connection.execute(message_table.insert(), rows)
        written += count
        print(f"  filled {written:,} / {messages:,} messages", flush=True)
    engine.dispose()


def conversation_app():
    """conversation_service with the export's internal routes (gunicorn `export:conversation_app()`),
    until conversation_service.api imports them itself."""
    import conversation_service.api.internal_export  # noqa: F401
    from conversation_service import create_app

    return create_app()


# --- measuring ------------------------------------------------------------------------------------


def worker_pid(log_path: Path) -> int:
    """The pid of gunicorn's one worker, from its "Booting worker with pid: N" line."""
    booted = [line for line in log_path.read_text().splitlines() if "Booting worker with pid" in line]
    if len(booted) != 1:
        raise SystemExit(f"expected one gunicorn worker, found {booted}")
    return int(booted[0].split()[-1])


def rss_bytes(pid: int) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class Sampler(threading.Thread):
    """The worker's peak resident memory while it runs."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = rss_bytes(pid)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.peak = max(self.peak, rss_bytes(self.pid))


def export(url: str, token: str) -> tuple[int, int, dict, float]:
    """Stream the export; (bytes, lines, the end line, seconds)."""
    started = time.perf_counter()
    size = lines = 0
    tail = b""
    with requests.get(
        f"{url}/api/chat/export", headers={"Authorization": f"Bearer {token}"}, stream=True, timeout=60
    ) as response:
        response.raise_for_status()
        for chunk in response.iter_content(1024 * 1024):
            size += len(chunk)
            lines += chunk.count(b"\n")
            tail = (tail + chunk)[-4096:]
    seconds = time.perf_counter() - started
    return size, lines, json.loads(tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]), seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    args = parser.parse_args()
    backend = sa.make_url(args.database_url).get_backend_name() if args.database_url else "sqlite"
    print(f"$ {command_line()}")
    with (
        tempfile.TemporaryDirectory(prefix="bench-export-") as tmp,
        database(args.database_url, "export_chat", Path(tmp)) as chat_url,
        database(None, "export_conversation", Path(tmp)) as conversation_url,
    ):
        migrate(chat_url)
        migrate_conversations(conversation_url)
        print(f"filling {args.messages:,} messages in {args.sessions} sessions on {backend} ...", flush=True)
        began = time.perf_counter()
        fill(chat_url, args.sessions, args.messages)
        print(f"  filled in {time.perf_counter() - began:.0f} s")
        common = {"JWT_SECRET": SECRET, "LOG_LEVEL": "WARNING", "OUTBOX_WORKER": "false"}
        conversation_env = {**common, "DATABASE_URL": conversation_url}
        with gunicorn(
            "export:conversation_app()",
            conversation_env,
            [],
            Path(tmp) / "conversation.log",
            pythonpath=str(Path(__file__).parent),
        ) as conversation:
            chat_env = {**common, "DATABASE_URL": chat_url, "CONVERSATION_SERVICE_URL": conversation}
            log_path = Path(tmp) / "chat.log"
            with gunicorn("chat_service:create_app()", chat_env, GEVENT_WORKER, log_path) as chat:
                token = mint_token(USER, config={"JWT_SECRET": SECRET}, ttl_seconds=3600)
                pid = worker_pid(log_path)
                warm = mint_token("warm-up", config={"JWT_SECRET": SECRET})  # a user with nothing
                requests.get(
                    f"{chat}/api/chat/export", headers={"Authorization": f"Bearer {warm}"}, timeout=60
                )
                baseline = rss_bytes(pid)
                sampler = Sampler(pid)
                sampler.start()
                size, lines, end, seconds = export(chat, token)
                sampler.done.set()
                sampler.join()
    growth = (sampler.peak - baseline) / 2**20
    whole = end.get("type") == "end" and end.get("messages") == args.messages
    print()
    print(f"backend                     {backend}")
    print(f"messages exported           {end.get('messages', 0):,} in {end.get('sessions', 0)} sessions")
    print(f"stream whole                {'yes' if whole else 'NO'} ({lines:,} lines, {size / 2**20:.1f} MiB)")
    print(f"time                        {seconds:.1f} s")
    rate = f"{args.messages / seconds:,.0f} messages/s, {size / 2**20 / seconds:.1f} MiB/s"
    print(f"throughput                  {rate}")
    print(f"worker RSS before           {baseline / 2**20:.1f} MiB")
    print(f"worker RSS peak             {sampler.peak / 2**20:.1f} MiB")
    verdict = "MET" if growth <= TARGET_MIB and whole else "MISSED"
    print(f"peak growth                 {growth:.1f} MiB (target <= {TARGET_MIB} MiB whatever N): {verdict}")


if __name__ == "__main__":
    main()
