"""Paging at scale: a session with 1,000,000 messages and a user with 100,000 conversations.

Times (p50/p95 over --runs requests through the real Flask apps' test clients, with a real token) page 1
against the last page of the page-number APIs, and the first against the deepest page of the cursor APIs;
prints EXPLAIN of every paging query, flagging any sort step. Each backend gets its own database,
created and dropped here.

    python bench/paging.py                                     # PostgreSQL at BENCH_POSTGRES_URL
    python bench/paging.py --mysql-url mysql+pymysql://root@127.0.0.1:3306/test   # and MariaDB
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask_migrate import upgrade

from chat_service import create_app as create_chat_app
from chat_service import crud
from chat_service.extensions import db as chat_db
from conversation_service import create_app as create_conversation_app
from conversation_service.extensions import db as conversation_db
from conversation_service.models import AiConversation
from conversation_service.schemas import encode_cursor
from shared.auth import mint_token

SECRET = "bench-secret-that-is-long-enough-for-hs256-000"
USER = "542738228948500480"
OTHER = "542738228948500481"
CONVERSATION_ID_BASE = 300_000_000_000_000_000


# --- databases ------------------------------------------------------------------------------------


def admin(url: str, statement: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sa.text(statement))
    finally:
        engine.dispose()


def create_database(server_url: str, name: str) -> str:
    postgres = make_url(server_url).get_backend_name() == "postgresql"
    admin(
        server_url,
        f'CREATE DATABASE "{name}"' if postgres else f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4",
    )
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, name: str) -> None:
    postgres = make_url(server_url).get_backend_name() == "postgresql"
    admin(
        server_url,
        f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' if postgres else f"DROP DATABASE IF EXISTS `{name}`",
    )


# --- bulk data ------------------------------------------------------------------------------------


def fill_messages(engine: sa.Engine, session_id: str, count: int) -> None:
    """USER's session with `count` messages, interleaved one for one with another user's session (as
    sessions written at the same time are), in bulk SQL; then each session's maintained count."""
    postgres = engine.dialect.name == "postgresql"
    other = str(uuid.uuid4())
    with engine.begin() as connection:
        for sid, user in ((session_id, USER), (other, OTHER)):
            connection.execute(
                sa.text(
                    "INSERT INTO chat_sessions (session_id, user_id, title, message_count, created_at,"
                    " updated_at, is_deleted) VALUES (:sid, :user, 'bench', 0, :now, :now, false)"
                ),
                {"sid": sid, "user": user, "now": "2025-01-01 00:00:00"},
            )
        params = {"sid": session_id, "other": other}
        if postgres:
            statement = (
                "INSERT INTO chat_messages (session_id, role, content, created_at, updated_at, is_deleted)"
                " SELECT CASE WHEN g % 2 = 0 THEN :sid ELSE :other END,"
                " CASE WHEN g % 4 < 2 THEN 'user' ELSE 'assistant' END,"
                " 'message ' || g || ' ' || repeat('x', 60),"
                " timestamp '2025-01-01' + g * interval '1 millisecond',"
                " timestamp '2025-01-01' + g * interval '1 millisecond', false"
                f" FROM generate_series(1, {2 * int(count)}) AS g"
            )
        else:  # MariaDB's SEQUENCE engine: seq_1_to_N is a table of 1..N
            connection.execute(sa.text("SET SESSION foreign_key_checks = 0"))
            statement = (
                "INSERT INTO chat_messages (session_id, role, content, created_at, updated_at, is_deleted)"
                " SELECT IF(seq % 2 = 0, :sid, :other), IF(seq % 4 < 2, 'user', 'assistant'),"
                " CONCAT('message ', seq, ' ', REPEAT('x', 60)),"
                " TIMESTAMP '2025-01-01 00:00:00' + INTERVAL seq * 1000 MICROSECOND,"
                " TIMESTAMP '2025-01-01 00:00:00' + INTERVAL seq * 1000 MICROSECOND, false"
                f" FROM seq_1_to_{2 * int(count)}"
            )
        connection.execute(sa.text(statement), params)
        if not postgres:
            connection.execute(sa.text("SET SESSION foreign_key_checks = 1"))
        for sid in (session_id, other):  # the maintained count, as create_message keeps it
            connection.execute(
                sa.text(
                    "UPDATE chat_sessions SET message_count = (SELECT count(*) FROM chat_messages"
                    " WHERE session_id = :sid AND is_deleted = false) WHERE session_id = :sid"
                ),
                {"sid": sid},
            )


def fill_conversations(engine: sa.Engine, count: int) -> None:
    """`count` records of USER's (1 in 1,000 pinned) and as many of another user's, in bulk SQL."""
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as connection:
        for user, n, base in ((USER, count, 0), (OTHER, count, count)):
            params = {"user": user, "base": CONVERSATION_ID_BASE + base}
            if postgres:
                statement = (
                    "INSERT INTO ai_conversations (id, user_id, title, dify_conversation_id, is_pinned,"
                    " created_time, updated_time, is_deleted, delete_token)"
                    " SELECT :base + g, :user, 'conversation ' || g, 'dify-' || g, g % 1000 = 0,"
                    " timestamp '2025-01-01' + g * interval '1 millisecond',"
                    " timestamp '2025-01-01' + g * interval '1 millisecond', false, 0"
                    " FROM generate_series(1, :n) AS g"
                )
                params["n"] = n
            else:
                statement = (
                    "INSERT INTO ai_conversations (id, user_id, title, dify_conversation_id, is_pinned,"
                    " created_time, updated_time, is_deleted, delete_token)"
                    " SELECT :base + seq, :user, CONCAT('conversation ', seq), CONCAT('dify-', seq),"
                    " seq % 1000 = 0, TIMESTAMP '2025-01-01 00:00:00' + INTERVAL seq * 1000 MICROSECOND,"
                    " TIMESTAMP '2025-01-01 00:00:00' + INTERVAL seq * 1000 MICROSECOND, false, 0"
                    f" FROM seq_1_to_{int(n)}"
                )
            connection.execute(sa.text(statement), params)
        # The page's total is each user's maintained count (conversation_service.services.live_counts).
        connection.execute(
            sa.text(
                "INSERT INTO conversation_user_counts (user_id, live_count)"
                " SELECT user_id, COUNT(*) FROM ai_conversations WHERE is_deleted = false GROUP BY user_id"
            )
        )


def analyze(engine: sa.Engine, tables: list[str]) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in tables:
            connection.execute(
                sa.text(
                    f"VACUUM ANALYZE {table}"
                    if engine.dialect.name == "postgresql"
                    else f"ANALYZE TABLE {table}"
                )
            )


# --- timing and plans -----------------------------------------------------------------------------


class Recorder:
    """The SQL statements an app runs, to EXPLAIN them afterwards."""

    def __init__(self, engine: sa.Engine) -> None:
        self.statements: list[tuple[str, object]] = []
        self.on = False
        sa.event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if self.on:
            self.statements.append((statement, parameters))


def p50_p95(call: Callable[[], object], runs: int) -> tuple[float, float]:
    for _ in range(3):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))]


def explain(engine: sa.Engine, statement: str, parameters: object) -> tuple[list[str], bool]:
    """The plan's lines and whether it has a sort step."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "postgresql":
            cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + statement, parameters)
            lines = [row[0] for row in cursor.fetchall()]
            return lines, any(
                line.strip().lstrip("-> ").startswith(("Sort", "Incremental Sort")) for line in lines
            )
        cursor.execute("EXPLAIN " + statement, parameters)
        names = [column[0] for column in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        keep = ("select_type", "table", "type", "key", "key_len", "ref", "rows", "Extra")
        lines = ["  ".join(f"{k}={row.get(k)}" for k in keep) for row in rows]
        return lines, any("filesort" in (row.get("Extra") or "") for row in rows)
    finally:
        raw.close()


def measure(name, client, path, query, token, runs, recorder, engine, results) -> dict:
    headers = {"Authorization": f"Bearer {token}"}

    def call():
        response = client.get(path, query_string=query, headers=headers)
        assert response.status_code == 200, response.get_json()
        return response.get_json()["data"]

    data = call()
    p50, p95 = p50_p95(call, runs)
    recorder.statements.clear()
    recorder.on = True
    call()
    recorder.on = False
    plans = []
    for statement, parameters in recorder.statements:
        if "chat_messages" in statement or "ai_conversations" in statement:
            lines, sorted_ = explain(engine, statement, parameters)
            plans.append((statement, lines, sorted_))
    results.append((name, query, p50, p95, plans))
    print(f"  {name:<44} p50 {p50:8.2f} ms   p95 {p95:8.2f} ms   {query}", flush=True)
    return data


# --- one backend ----------------------------------------------------------------------------------


def run_backend(server_url: str, args) -> list:
    backend = make_url(server_url).get_backend_name()
    name = f"bench_paging_{os.getpid()}_{secrets.token_hex(3)}"
    print(f"\n== {backend}: database {name} ==", flush=True)
    chat_url = create_database(server_url, name + "_chat")
    conversation_url = create_database(server_url, name + "_conv")
    results: list = []
    try:
        environ = {"JWT_SECRET": SECRET, "LOG_LEVEL": "WARNING"}
        chat_app = create_chat_app({**environ, "DATABASE_URL": chat_url})
        conversation_app = create_conversation_app({**environ, "DATABASE_URL": conversation_url})
        token = mint_token(USER, config={"JWT_SECRET": SECRET})
        with chat_app.app_context():
            upgrade()
            engine = chat_db.engine
            sid = str(uuid.uuid4())
            start = time.perf_counter()
            fill_messages(engine, sid, args.messages)
            analyze(engine, ["chat_sessions", "chat_messages"])
            print(
                f"  inserted 2 x {args.messages:,} messages in {time.perf_counter() - start:.1f} s",
                flush=True,
            )
            low, high, total = chat_db.session.execute(
                sa.text(
                    "SELECT min(message_id), max(message_id), (SELECT message_count FROM chat_sessions"
                    " WHERE session_id = :sid) FROM chat_messages WHERE session_id = :sid"
                ),
                {"sid": sid},
            ).one()
            chat_db.session.rollback()
            recorder = Recorder(engine)
        client = chat_app.test_client()
        size = args.page_size
        last = -(-total // size)
        path = f"/api/chat/sessions/{sid}/messages"
        m = lambda label, query: measure(  # noqa: E731
            label, client, path, query, token, args.runs, recorder, engine, results
        )
        print(f"  messages: {total:,} in the session (message_count), page_size {size}")
        first = m("messages page 1", {"page": 1, "page_size": size})
        lastp = m(f"messages last page ({last})", {"page": last, "page_size": size})
        m(f"messages middle page ({last // 2})", {"page": last // 2, "page_size": size})
        m("messages page 1, order=desc", {"page": 1, "page_size": size, "order": "desc"})
        m(f"messages last page ({last}), order=desc", {"page": last, "page_size": size, "order": "desc"})
        newest = m("cursor: newest (before_id=max+1)", {"before_id": high + 1, "page_size": size})
        oldest = m("cursor: deepest (before_id=min+page_size)", {"before_id": low + size, "page_size": size})
        m("cursor: first after_id (after_id=min)", {"after_id": low, "page_size": size})
        m("cursor: deepest after_id (max-page_size)", {"after_id": high - size, "page_size": size})
        assert len(first["items"]) == size and len(newest["items"]) == size and not oldest["has_more"]
        if total % size == 0:  # then the last page by number is the newest page by cursor
            assert [i["message_id"] for i in lastp["items"]] == [i["message_id"] for i in newest["items"]]

        # The seed's crud.list_messages alone on the last page: the plain OFFSET the service avoids.
        with chat_app.app_context():
            naive = lambda: crud.list_messages(chat_db.session, sid, last, size)  # noqa: E731
            p50, p95 = p50_p95(naive, max(5, args.runs // 3))
            chat_db.session.rollback()
        results.append(("crud.list_messages (plain OFFSET), last page", {}, p50, p95, []))
        print(f"  {'crud.list_messages (plain OFFSET), last page':<44} p50 {p50:8.2f} ms   p95 {p95:8.2f} ms")

        with conversation_app.app_context():
            upgrade()
            cengine = conversation_db.engine
            start = time.perf_counter()
            fill_conversations(cengine, args.conversations)
            analyze(cengine, ["ai_conversations"])
            print(
                f"  inserted 2 x {args.conversations:,} conversations in {time.perf_counter() - start:.1f} s"
            )
            csize = args.conversation_page_size
            order = (
                AiConversation.is_pinned.desc(),
                AiConversation.created_time.desc(),
                AiConversation.id.desc(),
            )
            before_last = conversation_db.session.scalar(
                sa.select(AiConversation)
                .where(AiConversation.user_id == USER, AiConversation.is_deleted.is_(False))
                .order_by(*order)
                .offset(args.conversations - csize - 1)
                .limit(1)
            )
            deepest_cursor = encode_cursor(before_last)
            conversation_db.session.rollback()
            crecorder = Recorder(cengine)
        cclient = conversation_app.test_client()
        cpath = "/api/ai/conversation/page"
        c = lambda label, query: measure(  # noqa: E731
            label, cclient, cpath, query, token, args.runs, crecorder, cengine, results
        )
        clast = -(-args.conversations // csize)
        c("conversations page 1", {"pageNo": 1, "pageSize": csize})
        c(f"conversations last page ({clast})", {"pageNo": clast, "pageSize": csize})
        c("conversations cursor: first", {"cursor": "", "pageSize": csize})
        deepest = c("conversations cursor: deepest", {"cursor": deepest_cursor, "pageSize": csize})
        assert len(deepest["records"]) == csize and not deepest["hasMore"]
        with chat_app.app_context():
            chat_db.engine.dispose()
        with conversation_app.app_context():
            conversation_db.engine.dispose()
    finally:
        drop_database(server_url, name + "_chat")
        drop_database(server_url, name + "_conv")
        print(f"  dropped {name}_chat and {name}_conv")

    print(f"\n-- {backend}: EXPLAIN of each paging query --")
    for label, query, _, _, plans in results:
        for statement, lines, sorted_ in plans:
            print(f"\n[{label}] {query}  sort step: {'YES' if sorted_ else 'none'}")
            print("  " + " ".join(statement.split()))
            for line in lines:
                print("    " + line)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
        help="a server URL whose user may create databases ('' to skip)",
    )
    parser.add_argument(
        "--mysql-url", default=os.environ.get("BENCH_MYSQL_URL", ""), help="MariaDB/MySQL server URL"
    )
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--conversation-page-size", type=int, default=10)
    args = parser.parse_args()
    print("command:", shlex.join([Path(sys.executable).name, *sys.argv]))
    print(f"machine: {os.cpu_count()} CPUs; {args.runs} runs per figure, after 3 warm-up runs")

    summary = {}
    for url in (args.postgres_url, args.mysql_url):
        if url:
            summary[make_url(url).get_backend_name()] = {
                label: p50 for label, _, p50, _, _ in run_backend(url, args)
            }

    print("\n== targets ==")
    for backend, figures in summary.items():
        last = next(v for k, v in figures.items() if k.startswith("messages last page (") and "desc" not in k)
        first_cursor = figures["cursor: newest (before_id=max+1)"]
        deepest_cursor = figures["cursor: deepest (before_id=min+page_size)"]
        c_first = figures["conversations cursor: first"]
        c_deep = figures["conversations cursor: deepest"]
        ok = {True: "met", False: "MISSED"}
        print(f"  {backend}: messages last page p50 {last:.2f} ms (target <= 50 ms): {ok[last <= 50]}")
        ratio = deepest_cursor / first_cursor
        print(
            f"  {backend}: messages cursor deepest/first {deepest_cursor:.2f}/{first_cursor:.2f} ms"
            f" = {ratio:.2f}x (target <= 2x): {ok[ratio <= 2]}"
        )
        ratio = c_deep / c_first
        print(
            f"  {backend}: conversations cursor deepest/first {c_deep:.2f}/{c_first:.2f} ms"
            f" = {ratio:.2f}x (target <= 2x): {ok[ratio <= 2]}"
        )


if __name__ == "__main__":
    main()
