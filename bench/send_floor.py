"""The floor under a turn whose pieces each go out alone: the CPU one small `send` costs the sender on
loopback TCP, its reader idle in another process (as a browser waiting for the next token is), and
what 200 deltas to 2 sockets therefore cost in sends alone, before any of our code runs.

    python bench/send_floor.py
    python bench/send_floor.py --sends 20000 --frame-bytes 150

On loopback the sender's `send` also pays the receiving side's TCP work (it runs in the sender's
softirq), so this floor is higher than across a real network; it is what bench/turn_cpu.py's worker
pays here. The sends are paced (a short sleep between them, its own CPU measured apart and taken off)
so that each one wakes the reader, as a token-by-token stream does. No target of its own: it says how
much of bench/turn_cpu.py's target the sends alone would take one frame per delta (`--delay`).
"""

from __future__ import annotations

import argparse
import os
import socket
import time

from _support import command_line

PACE_SECONDS = 0.0002
TURN_TARGET_MS = 5.0  # bench/turn_cpu.py's
FRAMES_PER_TURN = 200 * 2  # 200 deltas to 2 sockets


def _reader(listener: socket.socket) -> None:
    connection, _ = listener.accept()
    while connection.recv(65536):
        pass
    os._exit(0)


def sleeps(count: int) -> float:
    started = time.process_time()
    for _ in range(count):
        time.sleep(PACE_SECONDS)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=20000)
    parser.add_argument("--frame-bytes", type=int, default=150, help="a delta frame's size on the wire")
    args = parser.parse_args()
    print("command:", command_line())
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    if os.fork() == 0:
        _reader(listener)
    sender = socket.create_connection(listener.getsockname())
    sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    frame = b"\x81\x7e" + args.frame_bytes.to_bytes(2, "big") + b"x" * args.frame_bytes
    for _ in range(1000):  # warm up
        sender.send(frame)
        time.sleep(PACE_SECONDS)
    started = time.process_time()
    for _ in range(args.sends):
        sender.send(frame)
        time.sleep(PACE_SECONDS)
    paced = time.process_time() - started
    alone = sleeps(args.sends)
    sender.close()
    os.wait()
    per_send_us = max(0.0, paced - alone) / args.sends * 1e6
    floor_ms = per_send_us * FRAMES_PER_TURN / 1000
    print(f"{args.sends} paced sends of {len(frame)} bytes: {per_send_us:.1f} us of the sender's CPU each")
    print(
        f"a turn of 200 deltas to 2 sockets, one frame per delta: {floor_ms:.1f} ms in sends alone,"
        f" {floor_ms / TURN_TARGET_MS:.0%} of bench/turn_cpu.py's {TURN_TARGET_MS} ms per turn"
    )


if __name__ == "__main__":
    main()
