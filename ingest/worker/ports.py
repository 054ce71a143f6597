"""The small interfaces between the worker and its drivers.

The worker depends on these protocols, not on aiohttp or SQLAlchemy: ``source.FeedSource``
implements :class:`Source`, ``db.store.Store`` implements :class:`Sink` and :class:`Leases`;
``tests/twins.py`` holds in-memory twins of each, held to the same contract tests.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from ingest.feed.packet import Action, Keying, Rejected


@dataclass
class WriteResult:
    """What a batch did: rows inserted per fixture (the rest were duplicates), conflicts."""

    inserted: dict[uuid.UUID, int] = field(default_factory=dict)
    conflicts: list[tuple[uuid.UUID, int]] = field(default_factory=list)
    rejected: int = 0
    unstorable: dict[uuid.UUID, int] = field(default_factory=dict)  # actions kept as rejected
    server: object = None  # which database server took it (None: the sink cannot say)


@dataclass(frozen=True)
class FixtureRow:
    fixture_id: uuid.UUID
    enabled: bool
    finished: bool
    last_seq: int
    packets: int
    last_packet_at: datetime | None
    state: str | None = None
    state_changed_at: datetime | None = None
    connects: int = 0
    last_error: str | None = None
    owner: str | None = None
    lease_expires_at: datetime | None = None


class State(StrEnum):
    """What a worker is doing with a fixture (``fixtures.state``, ``ingest status``): the one
    spelling of a fixture's state, in the worker, the registry and what people read."""

    STARTING = "starting"  # registered with this run, not yet connecting
    CONNECTING = "connecting"  # reading MAX(seq) and opening the stream
    CONNECTED = "connected"  # streaming
    BACKING_OFF = "backing off"  # disconnected (or the token refused), waiting to reconnect
    BLOCKED = "blocked"  # a frame over the size limit stops the stream; retried slowly
    FINISHED = "finished"  # its finished packet is stored
    NOT_FOUND = "not found"  # the feed does not know the fixture (HTTP 404)
    STOPPED = "stopped"  # the run ended before the fixture finished
    RELEASED = "released"  # handed over to another worker (leases)


@dataclass(frozen=True)
class SavedState:
    """A fixture's state as saved for ``ingest status`` and operators."""

    fixture_id: uuid.UUID
    state: State
    since: datetime
    connects: int
    last_error: str | None
    rejected_unstored: int = 0  # rejected frames over the rate, counted since the last save


class Source(Protocol):
    def stream(
        self,
        fixture_id: uuid.UUID,
        start_position: int,
        *,
        speed: str | None = None,
        on_connected: Callable[[], None] | None = None,
        keying: Keying | None = None,
    ) -> AsyncGenerator[Action | Rejected, None]: ...


class Sink(Protocol):
    async def write(
        self,
        actions: Sequence[tuple[uuid.UUID, Action]],
        rejected: Sequence[tuple[uuid.UUID, Rejected]] = (),
        *,
        server: object = None,
    ) -> WriteResult:
        """Store a batch; ``server``: the server earlier batches went to (None: any); a batch
        that reaches another writes nothing and raises :class:`ingest.errors.ServerChanged`."""
        ...

    async def max_seq(self, fixture_id: uuid.UUID) -> int: ...

    async def max_seqs(self, fixture_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]: ...

    async def payload_at(self, fixture_id: uuid.UUID, seq: int) -> str | None: ...

    async def is_numbered(self, fixture_id: uuid.UUID) -> bool | None: ...

    async def fixtures(
        self, fixture_ids: Sequence[uuid.UUID] | None = None
    ) -> list[FixtureRow]: ...

    async def runnable_fixtures(self) -> list[uuid.UUID]: ...

    async def save_states(self, states: Sequence[SavedState]) -> None: ...

    async def register(self, fixture_ids: Sequence[uuid.UUID], *, enable: bool = False) -> int: ...


class Leases(Protocol):
    """Sharing the registry between workers: claims, renewals and releases of fixtures."""

    async def claim_fixtures(
        self, owner: str, ttl: float, max_fixtures: int | None, held: int
    ) -> list[uuid.UUID]: ...

    async def fair_share(self, owner: str, ttl: float) -> int: ...

    async def renew_leases(
        self, owner: str, ttl: float, fixture_ids: Sequence[uuid.UUID]
    ) -> list[uuid.UUID]: ...

    async def release_leases(
        self, owner: str, fixture_ids: Sequence[uuid.UUID] | None = None
    ) -> None: ...


class Reconciler(Protocol):
    """Comparing our views with the provider's own ``fixtureSummary`` (``summary_mismatches``)."""

    async def fixtures_in_disagreement(
        self, fixture_ids: Sequence[uuid.UUID] | None = None
    ) -> dict[uuid.UUID, list[dict[str, Any]]]: ...
