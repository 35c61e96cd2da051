"""REST overhead: three chat_service routes and two conversation_service routes against a bare Flask app
doing the same SQL and answering the same JSON (bench/bare_app.py), both under the same gunicorn
settings (one gevent worker), in one run.

    python bench/rest_overhead.py                       # SQLite files
    python bench/rest_overhead.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    python bench/rest_overhead.py --database-url mysql+pymysql://root@127.0.0.1:3306/test
    python bench/rest_overhead.py --service conversation

Routes: GET a session, GET a page of 50 messages, POST a message; GET a page of 20 conversation records
and GET the list of all of them (`--conversations`, 100). Load: wrk (one thread, keep-alive
connections, a Lua script for the POST body and the token) or, without wrk, Python threads. Target:
ours >= 0.8x the bare app's req/s, and p99 on one connection (the median of `--rounds` runs) <= 1.5x its p99.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
import sqlalchemy as sa
from _support import (
    GEVENT_WORKER,
    ROOT,
    SECRET,
    command_line,
    gunicorn,
    migrate,
    percentile,
    temporary_database,
)
from bare_app import conversations, messages, sessions, user_counts

from shared.auth import mint_token

USER = "bench-user"
READ_SESSION = "11111111-1111-4111-8111-111111111111"  # seeded with --messages messages
WRITE_SESSION = "22222222-2222-4222-8222-222222222222"  # where POSTs go
TARGET_THROUGHPUT, TARGET_P99 = 0.8, 1.5
# Both apps: one gevent worker, and the production configs' worker hook (the startup objects frozen).
APP_SERVER = [*GEVENT_WORKER, "--config", str(ROOT / "bench" / "gunicorn.conf.py")]

LUA = """
wrk.method = "{method}"
wrk.headers["Authorization"] = "Bearer {token}"
wrk.headers["Content-Type"] = "application/json"
{body}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout + e.status, latency:percentile(50), latency:percentile(99)))
end
"""


def seed(url: str, count: int) -> None:
    """The same two sessions in each database, the read one holding `count` messages."""
    engine = sa.create_engine(url)
    now = datetime.now(UTC).replace(tzinfo=None)
    row = {"user_id": USER, "title": "bench", "created_at": now, "updated_at": now, "is_deleted": False}
    with engine.begin() as conn:
        conn.execute(sa.insert(sessions), [{**row, "session_id": READ_SESSION, "message_count": count}])
        conn.execute(sa.insert(sessions), [{**row, "session_id": WRITE_SESSION, "message_count": 0}])
        conn.execute(
            sa.insert(messages),
            [
                {
                    "session_id": READ_SESSION,
                    "role": "user" if i % 2 == 0 else "assistant",
                    "content": f"message {i}: " + "lorem ipsum dolor sit amet " * 4,
                    "created_at": now + timedelta(seconds=i),
                    "updated_at": now + timedelta(seconds=i),
                    "is_deleted": False,
                }
                for i in range(count)
            ],
        )
    engine.dispose()


ROUTES = [
    ("GET session", "GET", f"/api/chat/sessions/{READ_SESSION}", None),
    (
        "GET messages page (50)",
        "GET",
        f"/api/chat/sessions/{READ_SESSION}/messages?page=2&page_size=50",
        None,
    ),
    (
        "POST message",
        "POST",
        "/api/chat/message",
        json.dumps({"session_id": WRITE_SESSION, "content": "a benchmark message, short and plain"}),
    ),
]


CONVERSATION_ROUTES = [
    ("GET conversations page (20)", "GET", "/api/ai/conversation/page?pageNo=2&pageSize=20", None),
    ("GET conversations list", "GET", "/api/ai/conversation/list", None),
]
CHAT_BLANKED = ("timestamp", "traceId", "created_at", "updated_at", "message_id")
# Both conversation databases are seeded with the same ids and times: only the envelope's differ.
CONVERSATION_BLANKED = ("timestamp", "traceId")


def seed_conversations(url: str, count: int) -> None:
    """The same `count` records of USER in each database (every seventh pinned, every third linked to a
    Dify conversation), their count row, and as many of another user's."""
    engine = sa.create_engine(url)
    start = datetime(2026, 12, 1, 8, 0, 0)
    rows = [
        {
            "id": 300_000_000_000_000_000 + i,
            "user_id": USER if i % 2 == 0 else "bench-other",
            "title": f"关于项目管理的讨论 {i}",
            "dify_conversation_id": f"dify-{i}" if i % 3 == 0 else None,
            "is_pinned": i % 7 == 0,
            "created_time": start + timedelta(seconds=i),
            "updated_time": start + timedelta(seconds=i, milliseconds=500),
            "is_deleted": False,
            "delete_token": 0,
        }
        for i in range(2 * count)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(conversations), rows)
        conn.execute(
            sa.insert(user_counts),
            [{"user_id": USER, "live_count": count}, {"user_id": "bench-other", "live_count": count}],
        )
    engine.dispose()


def _strip(value, blanked=CHAT_BLANKED):
    """The JSON with what differs by nature between two answers (times, trace ids, new ids) blanked."""
    if isinstance(value, dict):
        return {k: "*" if k in blanked else _strip(v, blanked) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip(v, blanked) for v in value]
    return value


def same_answers(ours: str, bare: str, token: str, routes=ROUTES, blanked=CHAT_BLANKED) -> list[str]:
    """Routes whose answers differ (status, envelope, data; key order included)."""
    differ = []
    headers = {"Authorization": f"Bearer {token}"}
    for name, method, path, body in routes:
        a = requests.request(method, ours + path, data=body, headers=headers, timeout=10)
        b = requests.request(method, bare + path, data=body, headers=headers, timeout=10)
        left, right = _strip(a.json(), blanked), _strip(b.json(), blanked)
        if a.status_code != b.status_code or json.dumps(left) != json.dumps(right):
            ours_text, bare_text = json.dumps(left)[:300], json.dumps(right)[:300]
            differ.append(f"{name}: {a.status_code} {ours_text} vs {b.status_code} {bare_text}")
    return differ


def run_wrk(url: str, method: str, path: str, body: str | None, token: str, args, workdir: Path) -> dict:
    script = workdir / "load.lua"
    script.write_text(LUA.format(method=method, token=token, body=f"wrk.body = [[{body}]]" if body else ""))
    command = [
        "wrk", "-t", "1", "-c", str(args.connections), "-d", f"{args.duration}s",
        "--timeout", "10s", "-s", str(script), url + path,
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, timeout=args.duration + 60, check=True)
    line = next(line for line in output.stdout.splitlines() if line.startswith("RESULT "))
    requests_done, micros, errors, p50, p99 = (int(x) for x in line.split()[1:])
    return {"rps": requests_done / (micros / 1e6), "p50": p50 / 1000, "p99": p99 / 1000, "errors": errors}


def run_python(url: str, method: str, path: str, body: str | None, token: str, args, _workdir: Path) -> dict:
    """Without wrk: one keep-alive connection per thread, for `--duration` seconds."""
    host, port = url.removeprefix("http://").split(":")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies: list[list[float]] = [[] for _ in range(args.connections)]
    errors = [0] * args.connections
    deadline = time.monotonic() + args.duration

    def client(index: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status >= 400:
                    errors[index] += 1
            except (OSError, http.client.HTTPException):
                errors[index] += 1
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                continue
            latencies[index].append((time.perf_counter() - started) * 1000)
        conn.close()

    began = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=args.duration + 30)
    elapsed = time.monotonic() - began
    ordered = sorted(t for per_thread in latencies for t in per_thread)
    return {
        "rps": len(ordered) / elapsed,
        "p50": percentile(ordered, 50),
        "p99": percentile(ordered, 99),
        "errors": sum(errors),
    }


def median_run(runs: list[dict]) -> dict:
    """Each figure's median over the rounds (errors: their sum)."""
    figures = {key: statistics.median(run[key] for run in runs) for key in ("rps", "p50", "p99")}
    return {**figures, "errors": sum(run["errors"] for run in runs)}


def bench_database(database_url: str | None, args, load, workdir: Path) -> list[str]:
    """Both apps on twin databases of one backend; print the table, return the missed targets."""
    token = mint_token(USER, config={"JWT_SECRET": SECRET})
    with (
        temporary_database(database_url, "rest_ours") as ours_db,
        temporary_database(database_url, "rest_bare") as bare_db,
    ):
        for url in (ours_db, bare_db):
            migrate(url)
            seed(url, args.messages)
        backend = sa.make_url(ours_db).get_backend_name()
        common = {"JWT_SECRET": SECRET, "LOG_LEVEL": "WARNING"}
        # The per-user request limit stays on (its check is part of every request's cost), set above
        # what one bench user sends: at its default a run would measure 429s. The outbox worker is off:
        # it delivers each POST's record change to conversation_service after the answer (not there
        # here: it would retry every row, and on SQLite its claims take the write lock the POSTs wait for).
        ours_settings = {
            **common,
            "DATABASE_URL": ours_db,
            "LIMIT_REQUESTS": "1000000000/minute",
            "OUTBOX_WORKER": "false",
        }
        with (
            gunicorn(
                "chat_service:create_app()",
                ours_settings,
                APP_SERVER,
                workdir / "ours.log",
            ) as ours,
            gunicorn(
                "bare_app:create_app()",
                {**common, "DATABASE_URL": bare_db},
                APP_SERVER,
                workdir / "bare.log",
                pythonpath=str(ROOT / "bench"),
            ) as bare,
        ):
            differ = same_answers(ours, bare, token)
            return measure(backend, {"ours": ours, "bare": bare}, ROUTES, differ, token, args, load, workdir)


def bench_conversations(database_url: str | None, args, load, workdir: Path) -> list[str]:
    """conversation_service and the bare app's conversation routes on twin databases of one backend."""
    token = mint_token(USER, config={"JWT_SECRET": SECRET})
    with (
        temporary_database(database_url, "rest_conv_ours") as ours_db,
        temporary_database(database_url, "rest_conv_bare") as bare_db,
    ):
        for url in (ours_db, bare_db):
            migrate(url, "conversation_service")
            seed_conversations(url, args.conversations)
        backend = sa.make_url(ours_db).get_backend_name()
        common = {"JWT_SECRET": SECRET, "LOG_LEVEL": "WARNING"}
        # As for chat_service: the request limit on, above what the bench sends.
        ours_settings = {**common, "DATABASE_URL": ours_db, "LIMIT_REQUESTS": "1000000000/minute"}
        with (
            gunicorn(
                "conversation_service:create_app()", ours_settings, APP_SERVER, workdir / "conv_ours.log"
            ) as ours,
            gunicorn(
                "bare_app:create_conversation_app()",
                {**common, "DATABASE_URL": bare_db},
                APP_SERVER,
                workdir / "conv_bare.log",
                pythonpath=str(ROOT / "bench"),
            ) as bare,
        ):
            differ = same_answers(ours, bare, token, CONVERSATION_ROUTES, CONVERSATION_BLANKED)
            apps = {"ours": ours, "bare": bare}
            return measure(
                f"{backend} conversation", apps, CONVERSATION_ROUTES, differ, token, args, load, workdir
            )


def measure(
    backend: str, apps: dict[str, str], routes, differ: list[str], token: str, args, load, workdir: Path
) -> list[str]:
    """Load each route on both apps, alternating; print the table, return the missed targets."""
    print(f"\n{backend}: answers identical (but times, ids, traceId): {'yes' if not differ else 'NO'}")
    for line in differ:
        print("  differs:", line)
    print(f"{'':30} {'loaded':>26} {'1 connection':>17}")
    print(
        f"{'route':24} {'app':5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"
    )
    missed = []
    for name, method, path, body in routes:
        runs: dict[str, list[dict]] = {"ours": [], "bare": []}
        if args.warmup:
            warm = argparse.Namespace(**{**vars(args), "duration": args.warmup})
            for url in apps.values():
                load(url, method, path, body, token, warm, workdir)
        for round_ in range(args.rounds):  # alternate who goes first: the machine drifts
            for label in ("ours", "bare") if round_ % 2 == 0 else ("bare", "ours"):
                runs[label].append(load(apps[label], method, path, body, token, args, workdir))
        results = {label: median_run(result) for label, result in runs.items()}
        # Latency without queueing: one connection, one request at a time; as many rounds, alternating,
        # each figure the median (a single run's p99 is its few slowest requests, and moved 10x).
        single = argparse.Namespace(**{**vars(args), "connections": 1})
        alone_runs: dict[str, list[dict]] = {"ours": [], "bare": []}
        for round_ in range(args.rounds):
            for label in ("bare", "ours") if round_ % 2 == 0 else ("ours", "bare"):
                alone_runs[label].append(load(apps[label], method, path, body, token, single, workdir))
        alone = {label: median_run(result) for label, result in alone_runs.items()}
        for label in ("ours", "bare"):
            result = results[label]
            print(
                f"{name if label == 'ours' else '':24} {label:5} {result['rps']:8.0f} "
                f"{result['p50']:8.2f} {result['p99']:8.2f} {alone[label]['p50']:8.2f} "
                f"{alone[label]['p99']:8.2f} {result['errors'] + alone[label]['errors']:7d}"
            )
        throughput = results["ours"]["rps"] / results["bare"]["rps"]
        p99 = alone["ours"]["p99"] / alone["bare"]["p99"]
        loaded_p99 = results["ours"]["p99"] / results["bare"]["p99"]
        errors = sum(results[label]["errors"] + alone[label]["errors"] for label in apps)
        # A refused or failed request is no answer: a run with errors measures nothing.
        met = throughput >= TARGET_THROUGHPUT and p99 <= TARGET_P99 and not errors
        print(
            f"{'':24} ratio: throughput {throughput:.2f}x (target >= {TARGET_THROUGHPUT}), "
            f"p99 alone {p99:.2f}x (target <= {TARGET_P99}), p99 loaded {loaded_p99:.2f}x: "
            f"{'met' if met else 'MISSED'}{f' ({errors} errors)' if errors else ''}"
        )
        if not met:
            missed.append(f"{backend} {name}")
    return missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per measured run")
    parser.add_argument("--rounds", type=int, default=3, help="measured runs per route and app (median)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load per route and app first")
    parser.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections")
    parser.add_argument("--messages", type=int, default=200, help="messages in the session that is paged")
    parser.add_argument(
        "--conversations", type=int, default=100, help="the bench user's conversation records"
    )
    parser.add_argument("--service", choices=["all", "chat", "conversation"], default="all")
    parser.add_argument(
        "--database-url", help="also run on this PostgreSQL or MariaDB server (own database, dropped)"
    )
    parser.add_argument("--load-generator", choices=["auto", "wrk", "python"], default="auto")
    args = parser.parse_args()
    print("command:", command_line())
    use_wrk = args.load_generator == "wrk" or (args.load_generator == "auto" and shutil.which("wrk"))
    load = run_wrk if use_wrk else run_python
    print(
        f"load: {'wrk, 1 thread' if use_wrk else 'Python threads'}, {args.connections} connections, "
        f"median of {args.rounds} runs of {args.duration} s per route and app, in alternating order, "
        f"after {args.warmup} s of warm-up; "
        f"gunicorn {' '.join(APP_SERVER[:-1])} bench/gunicorn.conf.py for both apps"
    )
    missed = []
    with tempfile.TemporaryDirectory(prefix="bench-rest-") as tmp:
        for database_url in [None] + ([args.database_url] if args.database_url else []):
            if args.service in ("all", "chat"):
                missed += bench_database(database_url, args, load, Path(tmp))
            if args.service in ("all", "conversation"):
                missed += bench_conversations(database_url, args, load, Path(tmp))
    print("\ntargets:", "all met" if not missed else "missed on " + ", ".join(missed))


if __name__ == "__main__":
    main()
