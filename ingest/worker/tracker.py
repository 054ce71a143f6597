"""Each fixture's counters and state in one run: changed by the follower and the writer, shown
as gauges, saved to the registry (``fixtures.state`` ...) in batches for ``ingest status``.
States are :class:`ingest.worker.ports.State`."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime

from ingest.errors import IngestError
from ingest.ops.metrics import Metrics
from ingest.settings import RunOptions
from ingest.worker.ports import SavedState, Sink, State
from ingest.worker.progress import FixtureStats

log = logging.getLogger(__name__)


class StateTracker:
    """The run's :class:`FixtureStats` per fixture, and what is done with their states."""

    def __init__(self, sink: Sink, options: RunOptions, metrics: Metrics | None) -> None:
        self._sink = sink
        self._options = options
        self._metrics = metrics
        self.stats: dict[uuid.UUID, FixtureStats] = {}

    def __getitem__(self, fixture_id: uuid.UUID) -> FixtureStats:
        return self.stats[fixture_id]

    def add(self, fixture_id: uuid.UUID) -> FixtureStats:
        return self.stats.setdefault(fixture_id, FixtureStats())

    def set(self, fixture_id: uuid.UUID, state: State, error: str | None = None) -> None:
        stats = self.stats[fixture_id]
        if self._metrics is not None and (stats.state == State.CONNECTED) != (
            state == State.CONNECTED
        ):
            self._metrics.connected.inc(1 if state == State.CONNECTED else -1)
        if self._metrics is not None and (stats.state == State.BLOCKED) != (state == State.BLOCKED):
            self._metrics.blocked.inc(1 if state == State.BLOCKED else -1)
        if state != stats.state:
            stats.state, stats.state_since = state, time.time()
        if error is not None:
            stats.last_error = error
        stats.state_saved = False

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
                rejected_unstored=self.stats[f].rejected_unstored - self.stats[f].unstored_saved,
            )
            for f in changed
        ]
        try:
            await self._sink.save_states(states)
        except BaseException:  # an error, or cancelled at shutdown: try again next time
            for fixture_id in changed:
                self.stats[fixture_id].state_saved = False
            raise
        for state in states:
            self.stats[state.fixture_id].unstored_saved += state.rejected_unstored

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

    def unable_to_connect(self, for_seconds: float) -> str | None:
        """Why a fixture has been backing off for longer than ``for_seconds``, if one has."""
        wall = time.time()
        for fixture_id, stats in self.stats.items():
            if stats.state == State.BACKING_OFF and wall - stats.state_since > for_seconds:
                return f"fixture {fixture_id} cannot connect: {stats.last_error}"
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
