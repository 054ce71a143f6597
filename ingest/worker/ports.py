"""The small interfaces between the worker and its drivers.

The worker depends on these protocols, not on aiohttp or SQLAlchemy: ``source.FeedSource``
implements :class:`Source`, ``db.store.Store`` implements :class:`Sink` and :class:`Leases`;
``tests/twins.py`` holds in-memory twins of each, held to the same contract tests.
``db.store.Store`` also implements :class:`BettingBoard`, where the betting status of each
fixture is kept (:mod:`ingest.worker.betting`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

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


class Source(Protocol):
    def stream(
        self,
        fixture_id: uuid.UUID,
        start_position: int,
        *,
        speed: str | None = None,
        on_connected: Callable[[], None] | None = None,
        keying: Keying | None = None,
        pulse: Pulse | None = None,
    ) -> AsyncGenerator[Action | Rejected, None]: ...


class Sink(Protocol):
    async def write(
        self,
        actions: Sequence[tuple[uuid.UUID, Action]],
        rejected: Sequence[tuple[uuid.UUID, Rejected]] = (),
        *,
        unstored: Mapping[uuid.UUID, int] | None = None,
        batch: uuid.UUID | None = None,
        server: object = None,
    ) -> WriteResult:
        """Store a batch; ``server``: the server earlier batches went to (None: any); a batch
        that reaches another writes nothing and raises :class:`ingest.errors.ServerChanged`.

        ``unstored``: per fixture, the rejected frames over the rate, counted (never stored) in
        the batch's transaction; ``batch``: the batch's token, the same on each retry, so that
        a retry of a batch that committed (its reply lost) stores and counts nothing again."""
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


class Reason(StrEnum):
    """Why a fixture's betting is suspended, in the order of precedence when several hold."""

    PROVIDER_SUSPENDED = "provider_suspended"  # the provider suspended collection
    FEED_DOWN = "feed_down"  # no open connection (disconnected, reconnecting, refused, blocked)
    FEED_STALE = "feed_stale"  # connected, but nothing arrived for --stale-after seconds
    FEED_DELAYED = "feed_delayed"  # packets arrive more than --max-delay after their timestamp
    WORKER_SILENT = "worker_silent"  # no worker confirmed the fixture alive in --stale-after


class Betting(NamedTuple):
    """A fixture's betting status: ``open``, ``suspended`` with a :class:`Reason`, or ``closed``
    (finished, or dropped by the provider). The one spelling, as ``betting_events`` holds it."""

    status: str
    reason: str | None = None

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    def __str__(self) -> str:
        return f"{self.status} ({self.reason})" if self.reason else self.status


OPEN = Betting("open")
CLOSED = Betting("closed")


def suspended(reason: Reason) -> Betting:
    return Betting("suspended", reason.value)


class Pulse:
    """When anything last arrived on a fixture's connection (a packet or a control message, a
    heartbeat included): ``at``, in the event loop's clock. The feed client keeps its liveness
    deadline on it, so the worker reads it without a call per message."""

    __slots__ = ("at",)

    def __init__(self, at: float = 0.0) -> None:
        self.at = at


class BettingBoard(Protocol):
    """Where each fixture's betting status is kept, and the worker's proof of life."""

    async def report_betting(
        self,
        worker: str,
        changes: dict[uuid.UUID, Betting],
        alive: Sequence[uuid.UUID],
        stale_after: float,
        *,
        sweep: bool = False,
        own: Sequence[uuid.UUID] = (),
    ) -> dict[uuid.UUID, Betting | None]:
        """Write ``changes`` (a repeat of the latest status is skipped, and so is anything but
        the provider's suspension or ``closed`` while the provider has suspended collection),
        confirm ``alive`` fixtures alive for ``stale_after`` seconds and, with ``sweep``, mark
        ``worker_silent`` the open fixtures of any worker that stopped confirming them (not
        ``alive`` nor ``own`` ones: the caller's). Answers the status in effect of the fixtures
        in ``changes``, and of the ``alive`` ones that are not open (None: no status yet); an
        ``alive`` fixture left out is open (so that a second's renewal of a thousand open
        fixtures answers nothing)."""
        ...

    async def leave_betting(self, worker: str, fixture_ids: Sequence[uuid.UUID]) -> None:
        """A clean stop: these fixtures are no longer confirmed alive (``worker_silent`` now)."""
        ...
