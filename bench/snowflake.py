"""Snowflake ids per second, and proof of no duplicates across processes.

Usage: .venv/bin/python bench/snowflake.py [--processes 4] [--ids 1000000]

Each process builds its own generator the way conversation_service does when SNOWFLAKE_WORKER_ID is
unset (worker id derived from the host name and pid), generates `--ids` ids as fast as it can, and
sends them back; the parent checks every process's ids increase and that no id repeats anywhere.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import shlex
import sys
import time
from array import array

from conversation_service.snowflake import Snowflake


def generate(count: int, start, results) -> None:
    generator = Snowflake()
    start.wait()
    began = time.perf_counter()
    ids = array("q", (generator.next_id() for _ in range(count)))
    results.put((generator.worker_id, time.perf_counter() - began, ids.tobytes()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--ids", type=int, default=1_000_000, help="ids per process")
    args = parser.parse_args()
    print("command:", shlex.join([sys.executable, *sys.argv]))

    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    workers = [
        context.Process(target=generate, args=(args.ids, start, results)) for _ in range(args.processes)
    ]
    for worker in workers:
        worker.start()
    time.sleep(1)  # let every process import and build its generator before the clock starts
    began = time.perf_counter()
    start.set()
    outcomes = [results.get() for _ in workers]
    wall = time.perf_counter() - began
    for worker in workers:
        worker.join()

    every = array("q")
    for worker_id, seconds, raw in outcomes:
        ids = array("q")
        ids.frombytes(raw)
        if not all(a < b for a, b in itertools.pairwise(ids)):
            sys.exit(f"worker {worker_id}: ids do not strictly increase")
        print(
            f"worker id {worker_id:4}: {len(ids):,} ids in {seconds:.3f} s = {len(ids) / seconds:,.0f} ids/s"
        )
        every.extend(ids)
    total = len(every)
    unique = len(set(every))
    print(f"all {args.processes} processes: {total:,} ids in {wall:.3f} s = {total / wall:,.0f} ids/s")
    print(f"distinct worker ids: {len({o[0] for o in outcomes})}; duplicate ids: {total - unique}")
    sys.exit(0 if unique == total else 1)


if __name__ == "__main__":
    main()
