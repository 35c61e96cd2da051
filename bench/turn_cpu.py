"""CPU per AI turn in the chat_service worker: a turn of 200 deltas streamed to 2 sockets, under the
production gunicorn config (one gevent worker), the echo provider with no delay (the provider's own cost
is a few microseconds: splitting the question into words). With no delay the pieces come faster than
they are sent and arrive as a few larger deltas (chat_service/live/arrivals.py); `--delay 0.002` paces
them so each goes out alone: then the echo's own timers (about 14-30 ms a turn, the provider's cost)
are in the figure, and the 400 sends alone take 3-10 ms here (bench/send_floor.py), so the target is
for the burst. Worker CPU is read from /proc (user + system time) around N turns; `--profile` also
samples the worker with py-spy when it is installed.

    python bench/turn_cpu.py --turns 100
    python bench/turn_cpu.py --turns 100 --profile /tmp/turn.svg   (or .txt: collapsed stacks)

Target: <= 5 ms of worker CPU per turn.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import requests
from _support import ROOT, SECRET, command_line, migrate
from simple_websocket import Client

from shared.auth import mint_token
from tests.processes import gunicorn_process

TARGET_MS = 5.0
DELTAS = 200
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def worker_of(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(children[0])


DELTA_FRAMES: list[int] = []  # delta frames each turn's sender received


def until(client: Client, kind: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    deltas = 0
    while time.monotonic() < deadline:
        frame = json.loads(client.receive(timeout=timeout))
        deltas += frame["type"] == "delta"
        if frame["type"] == kind:
            DELTA_FRAMES.append(deltas)
            return frame
        if frame["type"] == "error":
            raise RuntimeError(frame)
    raise TimeoutError(kind)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds between the echo's pieces (0: a burst)"
    )
    parser.add_argument("--profile", help="an SVG flame graph of the worker during the turns (py-spy)")
    args = parser.parse_args()
    print("command:", command_line())
    question = " ".join(f"word{i}" for i in range(DELTAS))  # the echo streams it back word by word

    with tempfile.TemporaryDirectory() as tmp:
        database = f"sqlite:///{tmp}/bench.sqlite3"
        migrate(database)
        environ = {
            "DATABASE_URL": database,
            "JWT_SECRET": SECRET,
            "LOG_LEVEL": "WARNING",
            "ECHO_DELAY_SECONDS": str(args.delay),
            "RATE_LIMITS": "false",
            "OUTBOX_WORKER": "false",  # mirroring to conversation_service is another process's cost
            "TITLE_GENERATION": "false",
        }
        token = mint_token("bench-user", config={"JWT_SECRET": SECRET})
        headers = {"Authorization": f"Bearer {token}"}
        worker = ["-c", str(ROOT / "chat_service/gunicorn.conf.py")]
        with gunicorn_process("chat_service:create_app()", environ, worker=worker) as server:
            sid = requests.post(f"{server.url}/api/chat/session", json={}, headers=headers, timeout=5).json()[
                "data"
            ]["session_id"]
            url = server.url.replace("http", "ws") + f"/ws/{sid}"
            sender, watcher = (Client.connect(url, headers=headers) for _ in range(2))
            pid = worker_of(server.process.pid)

            def turn() -> None:
                sender.send(json.dumps({"type": "message", "content": question}))
                for client in (sender, watcher):
                    done = until(client, "assistant_message")
                    assert len(done["data"]["content"]) == len(question), done

            for _ in range(5):  # warm up: imports, the pool, caches
                turn()
            profiler = None
            if args.profile and shutil.which("py-spy"):
                profiler = subprocess.Popen(
                    ["py-spy", "record", "--pid", str(pid), "--output", args.profile, "--rate", "500"]
                    + (["--format", "raw"] if not args.profile.endswith(".svg") else []),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1)
            DELTA_FRAMES.clear()
            before, started = cpu_seconds(pid), time.perf_counter()
            for _ in range(args.turns):
                turn()
            cpu, wall = cpu_seconds(pid) - before, time.perf_counter() - started
            if profiler is not None:
                profiler.send_signal(2)
                profiler.wait(timeout=30)
            sender.close()
            watcher.close()
    per_turn = cpu / args.turns * 1000
    print(f"{args.turns} turns of {DELTAS} deltas to 2 sockets in {wall:.2f} s")
    frames = sorted(DELTA_FRAMES[::2])  # the sender's count of each turn
    print(
        f"delta frames per turn (the {DELTAS} provider pieces, coalesced as they arrived):"
        f" median {frames[len(frames) // 2]}, max {frames[-1]}"
    )
    print(f"worker CPU {cpu:.2f} s: {per_turn:.2f} ms per turn ({per_turn / DELTAS * 1000:.0f} us per delta)")
    if args.profile:
        print(f"profile: {args.profile}" if profiler else "profile: py-spy is not installed")
    print(f"target: <= {TARGET_MS} ms per turn: {'MET' if per_turn <= TARGET_MS else 'MISSED'}")


if __name__ == "__main__":
    main()
