"""Each fixture's counters and state in one run: changed by the follower and the writer, shown
as gauges, saved to the registry (``fixtures.state`` ...) in batches for ``ingest status``.
States are :class:`ingest.worker.ports.State`."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ingest.errors import IngestError
from ingest.settings import RunOptions
from ingest.worker.ports import SavedState, Sink, State
from ingest.worker.progress import FixtureStats

if TYPE_CHECKING:  # metrics are made only when read (--metrics-port, --metrics-file)
    from ingest.ops.metrics import Metrics

log = logging.getLogger(__name__)

UNABLE_TO_CONNECT_AFTER = 120.0  # seconds: then /readyz fails and the watchdog is not fed
_TRYING = (State.CONNECTING, State.BACKING_OFF)


class StateTracker:
    """The run's :class:`FixtureStats` per fixture, and what is done with their states."""

    def __init__(
        self,
        sink: Sink,
        options: RunOptions,
        metrics: Metrics | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sink = sink
        self._options = options
        self._metrics = metrics
        self._clock = clock  # wall time: state_since is shown to people and saved
        self.stats: dict[uuid.UUID, FixtureStats] = {}
        self.on_change: Callable[[uuid.UUID], None] | None = None  # a state changed (betting)

    def __getitem__(self, fixture_id: uuid.UUID) -> FixtureStats:
        return self.stats[fixture_id]

    def add(self, fixture_id: uuid.UUID) -> FixtureStats:
        if fixture_id not in self.stats:
            self.stats[fixture_id] = FixtureStats(state_since=self._clock())
            if self._metrics is not None:
                self._metrics.fixtures.labels(State.STARTING.value).inc()
        return self.stats[fixture_id]

    def set(self, fixture_id: uuid.UUID, state: State, error: str | None = None) -> None:
        stats, now = self.stats[fixture_id], self._clock()
        if self._metrics is not None and state != stats.state:
            self._metrics.fixtures.labels(stats.state.value).dec()
            self._metrics.fixtures.labels(state.value).inc()
            for gauge, counted in ((self._metrics.connected, State.CONNECTED),
                                   (self._metrics.blocked, State.BLOCKED)):  # fmt: skip
                if (stats.state == counted) != (state == counted):
                    gauge.inc(1 if state == counted else -1)
        if state in _TRYING:  # the clock of "unable to connect" runs until a connection opens
            if stats.unconnected_since is None:
                stats.unconnected_since = now
        else:
            stats.unconnected_since = None
        if state != stats.state:
            stats.state, stats.state_since = state, now
            if self.on_change is not None:
                self.on_change(fixture_id)
        if error is not None:
            stats.last_error = error
        stats.state_saved = False

    def restore(self, fixture_id: uuid.UUID, state: State, since: datetime | None) -> None:
        """A state the registry already holds (nothing to save): a finished fixture's."""
        stats = self.stats[fixture_id]
        if self._metrics is not None and state != stats.state:
            self._metrics.fixtures.labels(stats.state.value).dec()
            self._metrics.fixtures.labels(state.value).inc()
        stats.state, stats.state_saved = state, True
        if since is not None:
            stats.state_since = since.timestamp()

    async def save(self) -> None:
        """Save the states changed since the last save (one statement)."""
        changed = [f for f, s in self.stats.items() if not s.state_saved]
        if not changed:
            return
        for fixture_id in changed:
            self.stats[fixture_id].state_saved = True
        states = [
            SavedState(
                fixture_id=f,
                state=self.stats[f].state,
                since=datetime.fromtimestamp(self.stats[f].state_since, UTC),
                connects=self.stats[f].connects,
                last_error=self.stats[f].last_error,
            )
            for f in changed
        ]
        try:
            await self._sink.save_states(states)
        except BaseException:  # an error, or cancelled at shutdown: try again next time
            for fixture_id in changed:
                self.stats[fixture_id].state_saved = False
            raise

    async def save_forever(self) -> None:
        while True:
            await asyncio.sleep(self._options.state_interval)
            try:
                await self.save()
            except IngestError as exc:  # states are for people: never worth stopping for
                log.debug("fixture states not saved: %s", exc)

    def blocked(self) -> str | None:
        """Why a fixture is blocked by a frame over the size limit, if one is."""
        for fixture_id, stats in self.stats.items():
            if stats.state == State.BLOCKED:
                return f"fixture {fixture_id} is blocked: {stats.last_error}"
        return None

    def unable_to_connect(self, for_seconds: float = UNABLE_TO_CONNECT_AFTER) -> str | None:
        """Why a fixture has been trying to connect (connecting and backing off in turn, the
        backoff capped far below ``for_seconds``) for longer than ``for_seconds``, if one has."""
        now = self._clock()
        for fixture_id, stats in self.stats.items():
            since = stats.unconnected_since
            if since is not None and stats.state in _TRYING and now - since > for_seconds:
                return (
                    f"fixture {fixture_id} has been unable to connect for {now - since:.0f} s: "
                    f"{stats.last_error}"
                )
        return None

    def log_progress(self, fixture_ids: list[uuid.UUID]) -> None:
        for fixture_id in fixture_ids:
            stats = self.stats[fixture_id]
            log.info(
                "fixture %s: progress: seq %d, %d packets received, %d stored, %d duplicates, "
                "%d rejected (%d of them over the rate, counted only), %d connects",
                fixture_id,
                stats.last_seq,
                stats.received,
                stats.stored,
                stats.duplicates,
                stats.rejected + stats.rejected_unstored,
                stats.rejected_unstored,
                stats.connects,
            )
