"""A provider's events reach the turn in batches of what arrived together (chat_service/live/arrivals.py):
a burst becomes one batch, paced events one batch each, a failure comes after what came before it, and
leaving early cancels and closes the stream."""

from __future__ import annotations

import threading

import pytest

from chat_service.live.arrivals import Arrivals
from chat_service.providers.base import Delta, Finished, ProviderError


class FakeStream:
    """Yields `events`; before each one waits on the gate the test opens (None: no wait)."""

    def __init__(self, events, *, gates=None, fail=None) -> None:
        self.events, self.gates, self.fail = events, gates, fail
        self.cancelled_event, self.closed = threading.Event(), False

    @property
    def cancelled(self) -> bool:
        return self.cancelled_event.is_set()

    def __iter__(self):
        for index, event in enumerate(self.events):
            if self.gates is not None:
                while not self.gates[index].wait(0.01):
                    if self.cancelled:
                        return
            yield event
        if self.fail is not None:
            raise self.fail

    def cancel(self) -> None:
        self.cancelled_event.set()

    def stop(self) -> bool:
        self.cancel()
        return False

    def close(self) -> None:
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def test_a_burst_arrives_as_one_batch_in_order():
    events = [Delta(f"w{i} ") for i in range(200)] + [Finished()]
    stream = FakeStream(events)
    with Arrivals(stream, trace_id="t") as arrivals:
        batches = list(arrivals)
    assert [event for batch in batches for event in batch] == events
    assert len(batches) <= 3  # read faster than relayed: not one per event
    assert stream.closed


def test_paced_events_arrive_one_batch_each():
    events = [Delta("a"), Delta("b"), Delta("c"), Finished()]
    gates = [threading.Event() for _ in events]
    stream = FakeStream(events, gates=gates)
    gates[0].set()
    batches = []
    with Arrivals(stream, trace_id="t") as arrivals:
        for batch in arrivals:
            batches.append(batch)
            if len(batches) < len(events):
                gates[len(batches)].set()  # the next event comes only after this batch was taken
    assert batches == [[event] for event in events]


def test_a_failure_comes_after_the_events_before_it():
    error = ProviderError("upstream went away", reason_code="stream_cut")
    stream = FakeStream([Delta("a"), Delta("b")], fail=error)
    seen = []
    with pytest.raises(ProviderError) as raised, Arrivals(stream, trace_id="t") as arrivals:
        for batch in arrivals:
            seen.extend(batch)
    assert raised.value is error
    assert seen == [Delta("a"), Delta("b")]


def test_leaving_early_cancels_the_stream_and_waits_for_its_reader():
    gates = [threading.Event(), threading.Event()]
    stream = FakeStream([Delta("a"), Delta("never")], gates=gates)
    gates[0].set()
    with Arrivals(stream, trace_id="t") as arrivals:
        for batch in arrivals:
            assert batch == [Delta("a")]
            break
    assert stream.cancelled and stream.closed
