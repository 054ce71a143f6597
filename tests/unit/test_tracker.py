"""The fixtures' states as operators see them: readiness ("unable to connect") and the gauges."""

from __future__ import annotations

import uuid

from ingest.ops.metrics import Metrics
from ingest.settings import RunOptions
from ingest.worker.ports import State
from ingest.worker.tracker import UNABLE_TO_CONNECT_AFTER, StateTracker
from tests.twins import MemorySink


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_fixture_that_never_connects_is_unable_to_connect_after_two_minutes() -> None:
    """With the production defaults: backoff capped at 30 s, the 120 s threshold. Each attempt
    sets 'connecting' and each failure 'backing off', so a clock that restarted with every state
    change never reached 120 s (seen: /readyz 200 at 136 s with ws://127.0.0.1:1)."""
    options, clock = RunOptions(), Clock()
    tracker = StateTracker(MemorySink(), options, None, clock)
    fixture = uuid.uuid4()
    tracker.add(fixture)
    assert options.backoff_max == 30.0 and UNABLE_TO_CONNECT_AFTER == 120.0
    elapsed = 0.0
    while elapsed <= UNABLE_TO_CONNECT_AFTER + options.backoff_max:
        tracker.set(fixture, State.CONNECTING)
        clock.now += 0.01  # the connection is refused at once
        tracker.set(fixture, State.BACKING_OFF, "cannot connect to ws://127.0.0.1:1")
        assert (tracker.unable_to_connect() is None) == (elapsed < UNABLE_TO_CONNECT_AFTER - 1)
        clock.now += options.backoff_max  # the longest wait: a state change every 30 s
        elapsed += options.backoff_max + 0.01
    why = tracker.unable_to_connect()
    assert why is not None and str(fixture) in why and "127.0.0.1:1" in why


def test_a_connection_restarts_the_clock() -> None:
    clock = Clock()
    tracker = StateTracker(MemorySink(), RunOptions(), None, clock)
    fixture = uuid.uuid4()
    tracker.add(fixture)
    tracker.set(fixture, State.BACKING_OFF, "refused")
    clock.now += UNABLE_TO_CONNECT_AFTER - 10
    tracker.set(fixture, State.CONNECTED)
    tracker.set(fixture, State.BACKING_OFF, "dropped")
    clock.now += 20
    assert tracker.unable_to_connect() is None  # 20 s since the last connection, not 130
    tracker.set(fixture, State.FINISHED)
    clock.now += 1_000
    assert tracker.unable_to_connect() is None


def test_the_fixtures_gauge_counts_each_state() -> None:
    metrics = Metrics()
    tracker = StateTracker(MemorySink(), RunOptions(), metrics)
    a, b = uuid.uuid4(), uuid.uuid4()
    tracker.add(a)
    tracker.add(b)
    tracker.set(a, State.CONNECTING)
    tracker.set(a, State.CONNECTED)
    tracker.restore(b, State.FINISHED, None)

    def gauge(state: State) -> float | None:
        return metrics.registry.get_sample_value("ingest_fixtures", {"state": state.value})

    assert (gauge(State.STARTING), gauge(State.CONNECTED), gauge(State.FINISHED)) == (0, 1, 1)
    assert gauge(State.CONNECTING) == 0
    assert metrics.registry.get_sample_value("ingest_connected_fixtures") == 1
