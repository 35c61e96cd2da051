"""Mixed load: 200 concurrent clients for 60 s against chat_service under its production gunicorn config
(chat_service/gunicorn.conf.py: one gevent worker, echo AI), REST and WebSocket turns together; then
checks that nothing acknowledged was lost.

    python bench/mixed_load.py                          # SQLite file
    python bench/mixed_load.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

Each client is a thread (spread over a few processes) acting for one of `--users` users on sessions of
its own: create sessions and messages, list and get them, edit and delete messages, delete a session, and
AI turns over WebSocket (`--sockets` sockets open on the session, the reply checked on every one).
Afterwards: zero 5xx, every acknowledged write present (content, role, deletion) in the database and
when read back through the API, `message_count` equal to the live rows of every session.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import multiprocessing
import os
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests
import sqlalchemy as sa
from _support import ROOT, SECRET, command_line, gunicorn, migrate, percentile, temporary_database
from simple_websocket import Client, ConnectionClosed

from shared.auth import mint_token

TIMEOUT = 30  # seconds, for any one request or frame
# What a client does, and how often (weights).
ACTIONS = {
    "create_message": 30,
    "list_messages": 14,
    "get_session": 10,
    "list_sessions": 8,
    "get_message": 7,
    "edit_message": 8,
    "delete_message": 5,
    "create_session": 3,
    "delete_session": 1,
    "ws_turn": 14,
}


class ClientState:
    """What one client wrote and had acknowledged: its sessions, its messages and their last state."""

    def __init__(self, name: str, user: str, token: str) -> None:
        self.name, self.user = name, user
        self.headers = {"Authorization": f"Bearer {token}"}
        self.sessions: dict[str, bool] = {}  # session id -> deleted
        # message id -> [session id, role, content, deleted]
        self.messages: dict[int, list] = {}
        self.counter = 0

    def live_sessions(self) -> list[str]:
        return [sid for sid, deleted in self.sessions.items() if not deleted]

    def live_messages(self, role: str | None = None) -> list[int]:
        return [
            mid
            for mid, (sid, r, _c, deleted) in self.messages.items()
            if not deleted and not self.sessions[sid] and (role is None or r == role)
        ]

    def text(self, kind: str) -> str:
        self.counter += 1
        return f"{kind} {self.name}-{self.counter} 你好 hello world"


class Recorder:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = collections.defaultdict(list)
        self.errors: collections.Counter = collections.Counter()
        self.statuses: collections.Counter = collections.Counter()
        self.turns = 0
        self.fanout_frames = 0

    def request(self, http: requests.Session, kind: str, method: str, url: str, **kwargs):
        started = time.perf_counter()
        try:
            response = http.request(method, url, timeout=TIMEOUT, **kwargs)
        except requests.RequestException as error:
            self.errors[f"{kind}: {error.__class__.__name__}"] += 1
            return None
        self.latencies[kind].append((time.perf_counter() - started) * 1000)
        self.statuses[response.status_code // 100 * 100] += 1
        if response.status_code != 200:
            body = ""
            if response.status_code >= 500:  # grouped by business code, not by traceId and timestamp
                try:
                    body = f"code {response.json()['code']}"
                except (ValueError, KeyError, TypeError):
                    body = response.text[:120]
            self.errors[f"{kind}: HTTP {response.status_code} {body}".strip()] += 1
            return None
        return response.json()["data"]


def ws_turn(base: str, state: ClientState, rec: Recorder, sockets: int) -> None:
    """One AI turn on one of the client's sessions, with `sockets` sockets open on it."""
    live = state.live_sessions()
    if not live:
        return
    sid = random.choice(live)
    url = base.replace("http://", "ws://") + f"/ws/{sid}"
    clients: list[Client] = []
    started = time.perf_counter()
    try:
        for _ in range(sockets):
            clients.append(Client.connect(url, headers=state.headers))
        for client in clients:  # a pong means the socket is subscribed: it will see every frame
            client.send(json.dumps({"type": "ping"}))
            while json.loads(client.receive(timeout=TIMEOUT) or "{}").get("type") != "pong":
                pass
        rec.latencies["ws_connect"].append((time.perf_counter() - started) * 1000)
        content = state.text("turn")
        sent = time.perf_counter()
        clients[0].send(json.dumps({"type": "message", "content": content}))
        first = True
        for client in clients:
            user_id = reply = None
            deadline = time.monotonic() + TIMEOUT
            while reply is None and time.monotonic() < deadline:
                raw = client.receive(timeout=max(0.1, deadline - time.monotonic()))
                if raw is None:
                    break
                frame = json.loads(raw)
                if frame["type"] == "error":
                    code = frame["code"]
                    rec.errors[f"ws_turn: error frame {code}"] += 1
                    if code >= 500 or code == 12001:
                        rec.statuses[500] += 1
                    return
                if frame["type"] == "user_message" and frame["data"]["content"] == content:
                    user_id = frame["data"]["message_id"]
                if frame["type"] == "assistant_message" and user_id is not None:
                    reply = frame["data"]
            if reply is None:
                rec.errors["ws_turn: no reply within 30 s"] += 1
                return
            if first:
                rec.latencies["ws_turn"].append((time.perf_counter() - sent) * 1000)
                state.messages[user_id] = [sid, "user", content, False]
                state.messages[reply["message_id"]] = [sid, "assistant", reply["content"], False]
                if reply["content"] != content:
                    rec.errors["ws_turn: echo reply differs from the message"] += 1
                rec.turns += 1
                first = False
            else:
                rec.fanout_frames += 1
    except (ConnectionClosed, OSError, RuntimeError) as error:
        rec.errors[f"ws_turn: {error.__class__.__name__}"] += 1
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()


def act(base: str, http: requests.Session, state: ClientState, rec: Recorder, action: str, args) -> None:
    h = state.headers
    api = base + "/api/chat"
    live = state.live_sessions()
    if action == "create_session" or not live:
        data = rec.request(http, "create_session", "POST", api + "/session", json={"title": "t"}, headers=h)
        if data:
            state.sessions[data["session_id"]] = False
        return
    sid = random.choice(live)
    if action == "create_message":
        content = state.text("rest")
        body = {"session_id": sid, "content": content}
        data = rec.request(http, action, "POST", api + "/message", json=body, headers=h)
        if data:
            state.messages[data["message_id"]] = [sid, "user", content, False]
    elif action == "list_messages":
        rec.request(http, action, "GET", f"{api}/sessions/{sid}/messages?order=desc", headers=h)
    elif action == "get_session":
        rec.request(http, action, "GET", f"{api}/sessions/{sid}", headers=h)
    elif action == "list_sessions":
        rec.request(http, action, "POST", api + "/sessions", json={}, headers=h)
    elif action in ("get_message", "edit_message", "delete_message"):
        candidates = state.live_messages("user" if action == "edit_message" else None)
        if not candidates:
            return
        mid = random.choice(candidates)
        entry = state.messages[mid]
        if action == "get_message":
            rec.request(http, action, "GET", f"{api}/sessions/{entry[0]}/messages/{mid}", headers=h)
        elif action == "edit_message":
            content = state.text("edited")
            if rec.request(
                http, action, "PATCH", f"{api}/messages/{mid}", json={"new_content": content}, headers=h
            ):
                entry[2] = content
        elif rec.request(http, action, "DELETE", f"{api}/messages/{mid}", headers=h) is not None:
            entry[3] = True
    elif action == "delete_session":
        if len(live) < 2:
            return
        if rec.request(http, action, "DELETE", f"{api}/sessions/{sid}", headers=h) is not None:
            state.sessions[sid] = True
    elif action == "ws_turn":
        ws_turn(base, state, rec, args.sockets)


def client_loop(base: str, state: ClientState, rec: Recorder, stop_at: float, args, lock) -> None:
    http = requests.Session()
    kinds, weights = list(ACTIONS), list(ACTIONS.values())
    rng = random.Random(state.name)
    try:
        for _ in range(1_000_000):  # bounded: the clock ends it long before
            if time.time() >= stop_at:
                break
            action = rng.choices(kinds, weights)[0]
            local = Recorder()
            act(base, http, state, local, action, args)
            with lock:
                for kind, values in local.latencies.items():
                    rec.latencies[kind] += values
                rec.errors.update(local.errors)
                rec.statuses.update(local.statuses)
                rec.turns += local.turns
                rec.fanout_frames += local.fanout_frames
            if args.think_ms:
                time.sleep(rng.uniform(0, 2 * args.think_ms) / 1000)
    finally:
        http.close()


def client_process(base: str, clients: list[tuple[str, str, str]], stop_at: float, args, results) -> None:
    """Run `clients` (name, user, token) as threads until `stop_at`; send back what they saw."""
    rec, lock = Recorder(), threading.Lock()
    states = [ClientState(*client) for client in clients]
    threads = [
        threading.Thread(target=client_loop, args=(base, state, rec, stop_at, args, lock), daemon=True)
        for state in states
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1, stop_at - time.time()) + 4 * TIMEOUT)
    results.put(
        {
            "latencies": dict(rec.latencies),
            "errors": dict(rec.errors),
            "statuses": dict(rec.statuses),
            "turns": rec.turns,
            "fanout_frames": rec.fanout_frames,
            "stuck_clients": sum(thread.is_alive() for thread in threads),
            "states": [(s.name, s.user, s.sessions, s.messages) for s in states],
        }
    )


def verify(database_url: str, base: str, tokens: dict[str, str], states: list) -> dict[str, int]:
    """Compare what was acknowledged with the database and with the API's own read-back."""
    problems: collections.Counter = collections.Counter(
        dict.fromkeys(
            [
                "acknowledged message missing from the database",
                "acknowledged message stored differently",
                "acknowledged delete not stored",
                "message deleted unasked",
                "acknowledged session missing from the database",
                "session deletion state differs",
            ],
            0,
        )
    )
    expected_messages: dict[int, list] = {}
    expected_sessions: dict[str, tuple[str, bool]] = {}
    for _name, user, sessions, messages in states:
        expected_messages.update(messages)
        for sid, deleted in sessions.items():
            expected_sessions[sid] = (user, deleted)
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        rows = {
            row.message_id: row
            for row in conn.execute(
                sa.text("SELECT message_id, session_id, role, content, is_deleted FROM chat_messages")
            )
        }
        sessions_rows = {
            row.session_id: row
            for row in conn.execute(sa.text("SELECT session_id, user_id, is_deleted FROM chat_sessions"))
        }
        counts = list(
            conn.execute(
                sa.text(
                    # A live session counts its live messages; a deleted one keeps the count of those
                    # deleted with it (the same deleted_at), which a restore brings back.
                    "SELECT s.session_id, s.message_count, COUNT(m.message_id) AS live "
                    "FROM chat_sessions s LEFT JOIN chat_messages m ON m.session_id = s.session_id "
                    "AND ((s.is_deleted = :no AND m.is_deleted = :no) "
                    "OR (s.is_deleted = :yes AND m.deleted_at = s.deleted_at)) "
                    "GROUP BY s.session_id, s.message_count"
                ),
                {"no": False, "yes": True},
            )
        )
    engine.dispose()
    for mid, (sid, role, content, deleted) in expected_messages.items():
        # Deleting a session deletes its live messages with it (restorable together, issue 14).
        deleted = deleted or expected_sessions.get(sid, (None, False))[1]
        row = rows.get(mid)
        if row is None:
            problems["acknowledged message missing from the database"] += 1
        elif (row.session_id, row.role, row.content) != (sid, role, content):
            problems["acknowledged message stored differently"] += 1
        elif bool(row.is_deleted) != deleted:
            problems["acknowledged delete not stored" if deleted else "message deleted unasked"] += 1
    for sid, (user, deleted) in expected_sessions.items():
        row = sessions_rows.get(sid)
        if row is None or row.user_id != user:
            problems["acknowledged session missing from the database"] += 1
        elif bool(row.is_deleted) != deleted:
            problems["session deletion state differs"] += 1
    mismatched = [row for row in counts if row.message_count != row.live]
    problems["sessions whose message_count differs from their live rows"] = len(mismatched)
    # Read back through the API: every live session's pages hold exactly its acknowledged live messages.
    http = requests.Session()
    for sid, (user, deleted) in expected_sessions.items():
        if deleted:
            continue
        headers = {"Authorization": f"Bearer {tokens[user]}"}
        seen: dict[int, str] = {}
        for page in range(1, 1000):
            response = http.get(
                f"{base}/api/chat/sessions/{sid}/messages",
                params={"page": page, "page_size": 100},
                headers=headers,
                timeout=TIMEOUT,
            )
            if response.status_code != 200:
                problems[f"read-back HTTP {response.status_code}"] += 1
                break
            items = response.json()["data"]["items"]
            seen.update((item["message_id"], item["content"]) for item in items)
            if len(items) < 100:
                break
        wanted = {
            mid: content
            for mid, (msid, _r, content, gone) in expected_messages.items()
            if msid == sid and not gone
        }
        problems["acknowledged message absent from the API's read-back"] += sum(
            1 for mid in wanted if mid not in seen
        )
        problems["message read back with other content"] += sum(
            1 for mid, content in wanted.items() if mid in seen and seen[mid] != content
        )
        problems["unacknowledged messages present (request failed after commit)"] += len(seen.keys() - wanted)
    http.close()
    return {
        **problems,
        "_acknowledged_messages": len(expected_messages),
        "_sessions": len(expected_sessions),
        "_sessions_checked_for_count": len(counts),
    }


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    return (
        f"{len(ordered):7d} {statistics.median(ordered):8.1f} {percentile(ordered, 95):8.1f} "
        f"{percentile(ordered, 99):8.1f} {ordered[-1]:8.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=60, help="seconds of load")
    parser.add_argument("--clients", type=int, default=200, help="concurrent clients (threads)")
    parser.add_argument("--processes", type=int, default=4, help="client processes the threads spread over")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--sockets", type=int, default=2, help="sockets open on the session of each turn")
    parser.add_argument("--think-ms", type=float, default=0, help="mean pause between a client's actions")
    parser.add_argument("--database-url", help="PostgreSQL server to use (own database, dropped after)")
    parser.add_argument(
        "--redis-url",
        default="",
        help="Redis for fan-out; then chat_service runs WEB_CONCURRENCY workers (2)",
    )
    args = parser.parse_args()
    print("command:", command_line())

    users = [f"load-user-{i}" for i in range(args.users)]
    tokens = {user: mint_token(user, ttl_seconds=3600, config={"JWT_SECRET": SECRET}) for user in users}
    clients = [(f"c{i}", users[i % len(users)], tokens[users[i % len(users)]]) for i in range(args.clients)]
    with temporary_database(args.database_url, "mixed") as database_url, tempfile.TemporaryDirectory() as tmp:
        migrate(database_url)
        environ = {
            "DATABASE_URL": database_url,
            "JWT_SECRET": SECRET,
            "LOG_LEVEL": "WARNING",
            "AI_PROVIDER": "echo",
            "REDIS_URL": args.redis_url,
            "CONVERSATION_SERVICE_URL": "http://127.0.0.1:1",
        }
        log = Path(tmp) / "server.log"
        options = ["-c", str(ROOT / "chat_service/gunicorn.conf.py")]
        workers = 2 if args.redis_url else 1
        with gunicorn("chat_service:create_app()", environ, options, log, workers=workers) as base:
            backend = sa.make_url(database_url).get_backend_name()
            print(
                f"chat_service: gunicorn -c chat_service/gunicorn.conf.py "
                f"(gevent, {workers} worker(s)), {backend}, "
                f"echo AI; {args.clients} clients in {args.processes} processes, {args.users} users, "
                f"{args.duration} s; admission: ADMISSION_MAX_IN_FLIGHT="
                f"{os.environ.get('ADMISSION_MAX_IN_FLIGHT', 'pool size + overflow (default)')}"
            )
            context = multiprocessing.get_context("spawn")
            results = context.Queue()
            stop_at = time.time() + 3 + args.duration  # 3 s for the processes to start
            workers = [
                context.Process(
                    target=client_process, args=(base, clients[i :: args.processes], stop_at, args, results)
                )
                for i in range(args.processes)
            ]
            for worker in workers:
                worker.start()
            outcomes = [results.get(timeout=args.duration + 10 * TIMEOUT) for _ in workers]
            for worker in workers:
                worker.join(timeout=30)
                if worker.is_alive():
                    worker.kill()
            problems = verify(database_url, base, tokens, [s for o in outcomes for s in o["states"]])
        server_errors: collections.Counter = collections.Counter()
        for line in log.read_text().splitlines():
            if '"level": "ERROR"' in line:
                record = json.loads(line)
                last = (record.get("exception") or "").strip().splitlines()[-1:] or [""]
                server_errors[f"{record.get('message')} {last[0][:150]}".strip()] += 1

    latencies: dict[str, list[float]] = collections.defaultdict(list)
    errors: collections.Counter = collections.Counter()
    statuses: collections.Counter = collections.Counter()
    for outcome in outcomes:
        for kind, values in outcome["latencies"].items():
            latencies[kind] += values
        errors.update(outcome["errors"])
        statuses.update(outcome["statuses"])
    requests_done = sum(len(v) for k, v in latencies.items() if not k.startswith("ws_"))
    turns = sum(o["turns"] for o in outcomes)
    print(
        f"\nREST requests: {requests_done} ({requests_done / args.duration:.0f}/s); "
        f"AI turns: {turns} ({turns / args.duration:.1f}/s), reply seen on all {args.sockets} sockets: "
        f"{sum(o['fanout_frames'] for o in outcomes) == turns * (args.sockets - 1)}"
    )
    print(
        f"HTTP statuses: {dict(sorted(statuses.items()))}; clients stuck at the end: "
        f"{sum(o['stuck_clients'] for o in outcomes)}"
    )
    print(f"\n{'latency ms':16} {'count':>7} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}")
    for kind in sorted(latencies):
        print(f"{kind:16} {summary(latencies[kind])}")
    print("\nerrors by kind:" + ("" if errors else " none"))
    for kind, count in errors.most_common():
        print(f"  {count:6d}  {kind}")
    print(f"server log lines at ERROR: {sum(server_errors.values())}")
    for kind, count in server_errors.most_common(5):
        print(f"  {count:6d}  {kind}")
    print(
        f"\nchecked {problems.pop('_acknowledged_messages')} acknowledged messages, "
        f"{problems.pop('_sessions')} sessions; message_count of "
        f"{problems.pop('_sessions_checked_for_count')} sessions against their rows:"
    )
    for kind, count in problems.items():
        print(f"  {count:6d}  {kind}")
    five_xx = statuses.get(500, 0)
    lost = sum(count for kind, count in problems.items() if not kind.startswith("unacknowledged"))
    print(
        f"\ntargets: 5xx {five_xx} (target 0), lost or wrong acknowledged writes and count mismatches "
        f"{lost} (target 0): {'met' if five_xx == 0 and lost == 0 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
