"""What a run counts: per fixture (packets, duplicates, gaps, its state) and for the run."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from ingest.feed.packet import Keying
from ingest.worker.ports import State


@dataclass
class FixtureStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejected_unstored: int = 0  # over the rate: counted (once its batch committed), not stored
    rejected_allowance: float = -1.0  # stored rejected frames still allowed (-1: a full burst)
    rejected_refilled: float = 0.0  # monotonic time of the allowance's last refill
    rejected_throttled: bool = False  # the last rejected frame was only counted
    keying: Keying | None = None  # by fixtureSeqNum or by position: decided once
    conflicts: int = 0
    gaps: int = 0
    connects: int = 0
    last_seq: int = 0
    finished: bool = False
    finishing: bool = False  # its finished packet received, its commit awaited
    state: State = State.STARTING
    state_since: float = field(default_factory=time.time)
    unconnected_since: float | None = None  # wall time: trying to connect since then
    last_error: str | None = None
    state_saved: bool = False


@dataclass
class RunResult:
    fixtures: dict[uuid.UUID, FixtureStats] = field(default_factory=dict)
    stopped: bool = False  # by a signal or --max-runtime, rather than by every fixture finishing

    @property
    def all_finished(self) -> bool:
        return all(s.finished for s in self.fixtures.values())
