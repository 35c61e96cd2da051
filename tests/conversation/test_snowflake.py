"""The snowflake generator: layout, uniqueness across threads and forks, clock trouble."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conversation_service import create_app
from conversation_service.snowflake import (
    EPOCH_MS,
    MAX_SEQUENCE,
    ClockMovedBackwards,
    Snowflake,
    derive_worker_id,
    parse_worker_id,
    parts,
)
from tests.conftest import base_environ


class FakeClock:
    """Wall-clock milliseconds that only move when a test (or the generator's sleep) moves them."""

    def __init__(self, now: int = EPOCH_MS + 1_000) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += 1


def fake(worker_id: int = 7, **kwargs) -> tuple[Snowflake, FakeClock]:
    clock = FakeClock()
    return Snowflake(worker_id, clock=clock, sleep=clock.sleep, **kwargs), clock


def test_an_id_holds_time_worker_and_sequence():
    before = time.time_ns() // 1_000_000
    snowflake_id = Snowflake(5).next_id()
    timestamp, worker, sequence = parts(snowflake_id)
    assert before <= timestamp <= time.time_ns() // 1_000_000
    assert (worker, sequence) == (5, 0)
    assert 0 < snowflake_id < 2**63


def test_ids_in_one_millisecond_count_up_then_wait_for_the_next():
    generator, clock = fake()
    ids = [generator.next_id() for _ in range(MAX_SEQUENCE + 2)]
    assert [parts(i)[2] for i in ids[:3]] == [0, 1, 2]
    assert parts(ids[-2]) == (EPOCH_MS + 1_000, 7, MAX_SEQUENCE)
    assert parts(ids[-1]) == (EPOCH_MS + 1_001, 7, 0)
    assert ids == sorted(set(ids))
    assert clock.slept


def test_ids_are_unique_and_increasing_across_threads():
    generator = Snowflake(1)

    def burst(_: int) -> list[int]:
        return [generator.next_id() for _ in range(5_000)]

    with ThreadPoolExecutor(8) as pool:
        bursts = list(pool.map(burst, range(8)))
    assert all(ids == sorted(ids) for ids in bursts)
    assert len({i for ids in bursts for i in ids}) == 40_000


def test_a_small_step_back_is_waited_out():
    generator, clock = fake()
    first = generator.next_id()
    clock.now -= 5
    second = generator.next_id()
    assert second > first
    assert parts(second)[0] >= parts(first)[0]
    assert clock.slept


def test_a_large_step_back_is_refused():
    generator, clock = fake(max_backwards_ms=50)
    generator.next_id()
    clock.now -= 51
    with pytest.raises(ClockMovedBackwards):
        generator.next_id()
    clock.now += 51
    assert generator.next_id()


def test_a_clock_before_the_epoch_is_refused():
    clock = FakeClock(EPOCH_MS - 1)
    with pytest.raises(ClockMovedBackwards):
        Snowflake(1, clock=clock, sleep=clock.sleep).next_id()


def test_derived_worker_ids_differ_for_consecutive_pids():
    ids = {derive_worker_id("host-a", pid) for pid in range(40_000, 41_024)}
    assert len(ids) == 1024
    assert derive_worker_id("host-a", 1) != derive_worker_id("host-b", 1)


def _child_worker_id(generator: Snowflake, queue) -> None:
    queue.put((parts(generator.next_id())[1], generator.worker_id))


def test_a_forked_child_takes_its_own_worker_id():
    generator = Snowflake()
    parent = parts(generator.next_id())[1]
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_worker_id, args=(generator, queue))
    child.start()
    child_worker, child_attribute = queue.get(timeout=10)
    child.join(10)
    queue.close()
    queue.join_thread()
    assert child_worker == child_attribute == derive_worker_id(pid=child.pid)
    assert child_worker != parent


@pytest.mark.parametrize(("raw", "expected"), [(None, None), ("", None), ("0", 0), ("1023", 1023), (12, 12)])
def test_parse_worker_id(raw, expected):
    assert parse_worker_id(raw) == expected


@pytest.mark.parametrize("raw", ["-1", "1024", "abc"])
def test_parse_worker_id_refuses_bad_values(raw):
    with pytest.raises(ValueError):
        parse_worker_id(raw)


def test_the_app_takes_its_worker_id_from_config(tmp_path):
    url = f"sqlite:///{tmp_path}/ids.sqlite3"
    app = create_app(base_environ(url, SNOWFLAKE_WORKER_ID="42"))
    assert app.extensions["snowflake"].worker_id == 42
    with pytest.raises(ValueError, match="SNOWFLAKE_WORKER_ID"):
        create_app(base_environ(url, SNOWFLAKE_WORKER_ID="4096"))
