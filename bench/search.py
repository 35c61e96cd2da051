"""Search at scale: a user with 1,000,000 messages of mixed Chinese and English (issue 14).

Times (p50/p99 over --runs requests through the real Flask app's test client, with a real token) of
GET /api/chat/search for a one-character CJK term, a two-character word, an English word, a mixed query
and a four-character run (bigrams, confirmed); prints how many messages each term is in, and the
EXPLAIN of the message query, which must use the search index. Each backend gets its own database,
created and dropped here. Target: p50 <= 50 ms on PostgreSQL and MariaDB.

    python bench/search.py                                    # PostgreSQL at BENCH_POSTGRES_URL
    python bench/search.py --mysql-url mysql+pymysql://root@127.0.0.1:3306/test   # and MariaDB
    python bench/search.py --postgres-url '' --sqlite         # SQLite (a temporary file)
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import secrets
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._support import command_line, percentile
from bench.paging import Recorder, create_database, drop_database
from chat_service import create_app
from chat_service.extensions import db
from shared.auth import mint_token
from shared.search_text import index_match, index_tokens, parse_query

SECRET = "bench-secret-that-is-long-enough-for-hs256-000"
USER = "542738228948500480"
OTHER = "542738228948500481"
MIGRATION = Path(__file__).resolve().parents[1] / "chat_service/migrations/versions/0009_search_tokens.py"
QUERIES = [
    ("1-char CJK term", "会"),
    ("2-char CJK word", "项目"),
    ("English word", "deploy"),
    ("mixed Chinese/English", "项目 plan"),
    ("4-char CJK run (bigrams + check)", "项目管理"),
    ("rare word", "kubernetes"),
    ("needle (20 in 1M: the index)", "翡翠"),
]
NEEDLE_EVERY = 50_000  # one message in this many mentions 翡翠 (jade): a term only the index finds fast

# Words of everyday work chat, drawn with a Zipf-like skew: some are in many messages, most in few.
CHINESE = (  # noqa: SIM905 - words in a sentence read better than a list of strings
    "我们 今天 明天 这个 那个 问题 项目 进度 会议 开会 讨论 一下 需要 可以 已经 还有 "
    "因为 所以 但是 如果 用户 数据 接口 测试 上线 版本 功能 文档 需求 设计 方案 代码 "
    "服务 部署 环境 配置 日志 监控 报警 性能 数据库 缓存 队列 搜索 索引 页面 按钮 登录 "
    "注册 权限 安全 预算 成本 合同 客户 销售 市场 运营 产品 经理 老师 同学 学校 考试 "
    "作业 周末 晚上 早上 中午 吃饭 咖啡 天气 下雨 北京 上海 深圳 杭州 出差 报告 总结 "
    "计划 目标 结果 分析 统计 图表 邮件 电话 消息 通知 提醒 时间 地点 安排 确认 取消 "
    "完成 管理 项目管理 质量 风险 资源 团队 同事 领导 面试 招聘 培训 学习 翻译 中文 英文 "
    "模型 智能 回答 谢谢 你好 好的 没问题 辛苦了 收到 稍等 马上 明白 为什么 怎么 什么 "
    "哪里 多少 的 了 是 在 有 和 也 都 就"
).split()
ENGLISH = (  # noqa: SIM905
    "the plan deploy release bug fix review merge branch test api server client database cache "
    "index query latency error timeout retry docker kubernetes meeting deadline budget report "
    "design draft user login token update sync backup monitor alert metric dashboard feature issue "
    "ticket sprint"
).split()


def zipf_choice(rng: random.Random, words: list[str]) -> str:
    return words[min(len(words) - 1, int(rng.paretovariate(1.1)) - 1)]


def message_text(rng: random.Random) -> str:
    """One or two sentences: mostly Chinese, some with English words, some English only."""
    kind = rng.random()
    if kind < 0.15:
        words = [zipf_choice(rng, ENGLISH) for _ in range(rng.randint(3, 12))]
        return " ".join(words).capitalize() + rng.choice([".", "?", "!"])
    parts = []
    for _ in range(rng.randint(2, 9)):
        if kind < 0.45 and rng.random() < 0.25:
            parts.append(" " + zipf_choice(rng, ENGLISH) + " ")
        else:
            parts.append(rng.choice(CHINESE) if rng.random() < 0.5 else zipf_choice(rng, CHINESE))
    return "".join(parts).strip() + rng.choice(["。", "？", "！", "，然后呢", ""])


def load_migration():
    spec = importlib.util.spec_from_file_location("search_migration", MIGRATION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fill(engine: sa.Engine, messages: int, others: int, per_session: int) -> None:
    """USER's `messages` and another user's `others`, interleaved, `per_session` per session, tokens
    computed by the same `index_tokens` the app uses; the search index dropped first, built after."""
    migration = load_migration()
    dialect = engine.dialect.name
    rng = random.Random(14)
    with engine.begin() as connection:
        for statement in migration.drop_index(dialect, "chat_messages"):
            connection.execute(sa.text(statement))
    start_time = datetime(2025, 1, 1)
    sessions: list[tuple[str, str]] = []
    for user, count in ((USER, messages), (OTHER, others)):
        sessions += [(str(uuid.uuid4()), user) for _ in range(-(-count // per_session))]
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO chat_sessions (session_id, user_id, title, message_count, created_at,"
                " updated_at, is_deleted, search_tokens)"
                " VALUES (:sid, :user, :title, 0, :now, :now, false, :tokens)"
            ),
            [
                {"sid": sid, "user": user, "title": title, "now": start_time, "tokens": index_tokens(title)}
                for sid, user in sessions
                for title in [message_text(rng)[:40]]
            ],
        )
    mine = [sid for sid, user in sessions if user == USER]
    theirs = [sid for sid, user in sessions if user == OTHER]
    total = messages + others
    columns = (
        "session_id, user_id, role, content, created_at, updated_at, is_deleted, is_generated, search_tokens"
    )
    batch: list[tuple] = []

    def rows():
        for i in range(total):
            other = others and i % max(1, total // others) == 0 and i // max(1, total // others) < others
            owner = theirs if other else mine
            sid = owner[(i // per_session) % len(owner)]
            text = message_text(rng) + (" 翡翠" if i % NEEDLE_EVERY == NEEDLE_EVERY // 2 else "")
            moment = start_time + timedelta(milliseconds=i)
            yield (
                sid,
                OTHER if other else USER,
                "user" if i % 2 == 0 else "assistant",
                text,
                moment,
                moment,
                False,
                i % 2 == 1,
                index_tokens(text),
            )

    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if dialect == "postgresql":
            with cursor.copy(f"COPY chat_messages ({columns}) FROM STDIN") as copy:
                for row in rows():
                    copy.write_row(row)
        else:
            marks = ", ".join(["%s" if dialect != "sqlite" else "?"] * 9)
            statement = f"INSERT INTO chat_messages ({columns}) VALUES ({marks})"
            for row in rows():
                batch.append(row)
                if len(batch) == 5000:
                    cursor.executemany(statement, batch)
                    batch.clear()
            if batch:
                cursor.executemany(statement, batch)
        raw.commit()
    finally:
        raw.close()
    started = time.perf_counter()
    with engine.begin() as connection:
        for statement in migration.create_index(dialect, "chat_messages", "message_id"):
            connection.execute(sa.text(statement))
        connection.execute(
            sa.text(
                "UPDATE chat_sessions SET message_count = (SELECT count(*) FROM chat_messages m"
                " WHERE m.session_id = chat_sessions.session_id)"
            )
        )
    print(f"  built the search index in {time.perf_counter() - started:.1f} s", flush=True)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in ("chat_sessions", "chat_messages"):
            statement = {"postgresql": "VACUUM ANALYZE {}", "sqlite": "ANALYZE {}"}.get(
                dialect, "ANALYZE TABLE {}"
            )
            connection.execute(sa.text(statement.format(table)))


def how_many(engine: sa.Engine, q: str) -> int:
    """USER's messages the index finds for `q` (before the substring check), to show how common it is."""
    messages = sa.table(
        "chat_messages", sa.column("message_id"), sa.column("session_id"), sa.column("search_tokens")
    )
    sessions = sa.table("chat_sessions", sa.column("session_id"), sa.column("user_id"))
    query = parse_query(q)
    statement = (
        sa.select(sa.func.count())
        .select_from(messages.join(sessions, sessions.c.session_id == messages.c.session_id))
        .where(
            sessions.c.user_id == USER,
            index_match(engine.dialect.name, messages, messages.c.message_id, query.tokens),
        )
    )
    with engine.connect() as connection:
        return connection.execute(statement).scalar_one()


def explain(engine: sa.Engine, statement: str, parameters: object) -> list[str]:
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        dialect = engine.dialect.name
        if dialect == "postgresql":
            cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + statement, parameters)
            return [row[0] for row in cursor.fetchall()]
        if dialect == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            return [str(row[-1]) for row in cursor.fetchall()]
        cursor.execute("EXPLAIN " + statement, parameters)
        names = [column[0] for column in cursor.description]
        keep = ("select_type", "table", "type", "key", "rows", "Extra")
        return [
            "  ".join(f"{k}={dict(zip(names, row, strict=True)).get(k)}" for k in keep)
            for row in cursor.fetchall()
        ]
    finally:
        raw.close()


def run_backend(url: str, args) -> dict[str, float]:
    backend = make_url(url).get_backend_name()
    name = f"bench_search_{os.getpid()}_{secrets.token_hex(3)}"
    tmp = tempfile.TemporaryDirectory(prefix="bench-search-") if backend == "sqlite" else None
    database = f"sqlite:///{tmp.name}/search.sqlite3" if tmp else create_database(url, name)
    print(
        f"\n== {backend}: {args.messages:,} messages of one user (+{args.others:,} of another) ==", flush=True
    )
    figures: dict[str, float] = {}
    try:
        app = create_app(
            {
                "DATABASE_URL": database,
                "JWT_SECRET": SECRET,
                "LOG_LEVEL": "WARNING",
                "OUTBOX_WORKER": "false",
                "LIMIT_REQUESTS": "0",
            }
        )
        with app.app_context():
            from flask_migrate import upgrade

            upgrade()
            engine = db.engine
            started = time.perf_counter()
            loader = sa.create_engine(database)  # without the app's statement timeouts
            fill(loader, args.messages, args.others, args.per_session)
            loader.dispose()
            print(f"  loaded in {time.perf_counter() - started:.1f} s", flush=True)
            recorder = Recorder(engine)
        client = app.test_client()
        headers = {"Authorization": f"Bearer {mint_token(USER, config={'JWT_SECRET': SECRET})}"}
        plans = []
        for label, q in QUERIES:

            def call(q=q):
                response = client.get(
                    "/api/chat/search", query_string={"q": q, "page_size": args.page_size}, headers=headers
                )
                assert response.status_code == 200, response.get_json()
                return response.get_json()["data"]

            for _ in range(3):
                data = call()
            times = []
            for _ in range(args.runs):
                started = time.perf_counter()
                call()
                times.append((time.perf_counter() - started) * 1000)
            times.sort()
            p50, p99 = percentile(times, 50), percentile(times, 99)
            figures[label] = p50
            with app.app_context():
                count = how_many(db.engine, q)
            print(
                f"  {label:<34} q={q!r:<14} in {count:>8,} messages  page {len(data['items']):>3}"
                f"   p50 {p50:8.2f} ms   p99 {p99:8.2f} ms",
                flush=True,
            )
            recorder.statements.clear()
            recorder.on = True
            call()
            recorder.on = False
            for statement, parameters in recorder.statements:  # the recent rows, then the index if asked
                if "FROM chat_messages" in statement:
                    plans.append((label, q, statement, explain(engine, statement, parameters)))
        print(f"\n-- {backend}: EXPLAIN of the message query --")
        for label, q, statement, lines in plans:
            print(f"\n[{label}] q={q!r}\n  " + " ".join(statement.split()))
            for line in lines:
                print("    " + line)
        with app.app_context():
            db.engine.dispose()
    finally:
        if tmp:
            tmp.cleanup()
        else:
            drop_database(url, name)
            print(f"  dropped {name}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
        help="a server URL whose user may create databases ('' to skip)",
    )
    parser.add_argument("--mysql-url", default=os.environ.get("BENCH_MYSQL_URL", ""), help="MariaDB URL")
    parser.add_argument("--sqlite", action="store_true", help="SQLite too (a temporary file)")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--others", type=int, default=100_000, help="another user's messages")
    parser.add_argument("--per-session", type=int, default=500)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--page-size", type=int, default=20)
    args = parser.parse_args()
    print("command:", command_line())
    print(
        f"machine: {os.cpu_count()} CPUs; {args.runs} runs per figure after 3 warm-ups;"
        f" page_size {args.page_size}"
    )
    summary = {}
    for url in (args.postgres_url, args.mysql_url, "sqlite://" if args.sqlite else ""):
        if url:
            summary[make_url(url).get_backend_name()] = run_backend(url, args)
    print("\n== target: p50 <= 50 ms ==")
    for backend, figures in summary.items():
        for label, p50 in figures.items():
            verdict = "MET" if p50 <= 50 else "MISSED"
            print(f"  {backend:<11} {label:<34} p50 {p50:8.2f} ms  {verdict}")


if __name__ == "__main__":
    main()
