"""The interface between the settler and its storage: the :class:`Ledger` protocol.

The settler (:mod:`ingest.settlement.settler`) depends on this protocol, not on a driver:
:class:`ingest.db.settlement.SettlementStore` implements it over PostgreSQL, and
``tests/twins.py`` holds an in-memory twin, held to the same contract tests
(``tests/integration/test_ledger_contract.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ingest.settlement.markets import Event


@dataclass(frozen=True)
class Progress:
    """How far settlement of a fixture is behind what is stored."""

    fixture_id: uuid.UUID
    last_seq: int
    finished: bool
    checkpoint: int

    @property
    def behind(self) -> bool:
        return self.checkpoint < self.last_seq

    @property
    def done(self) -> bool:
        """Finished, and every packet's consequences are in the event log."""
        return self.finished and not self.behind


@dataclass(frozen=True)
class Settled:
    """What one settlement pass of a fixture did (one transaction)."""

    fixture_id: uuid.UUID
    events: list[Event]
    checkpoint: int  # the last packet whose consequences are now in the event log
    previous: int  # the checkpoint before this pass
    ended: bool  # the match has ended (and was not dropped)


class Subscription(Protocol):
    """A LISTEN in progress: ``lost`` once its connection has gone."""

    @property
    def lost(self) -> bool: ...

    async def ping(self) -> bool:
        """Is it still there? (a round trip; marks it lost if not)"""
        ...

    async def close(self) -> None: ...


class Ledger(Protocol):
    """What the settler needs of storage: the stored packets' notifications, which fixtures to
    follow and how far each is settled, which may not be settled now, and one fixture's
    settlement pass (its new events and its checkpoint, together or not at all)."""

    async def listen(self, channel: str, on_payload: Callable[[str], None]) -> Subscription:
        """Hear every notification on ``channel`` (the payload, JSON text) until closed."""
        ...

    async def followed(self, fixture_ids: Sequence[uuid.UUID], follow_all: bool) -> list[uuid.UUID]:
        """The given fixtures (once each, in order), plus with ``follow_all`` every enabled
        fixture in the registry, in the order they were added."""
        ...

    async def progress(self, fixture_ids: Sequence[uuid.UUID]) -> list[Progress]: ...

    async def fixtures_on_hold(self, fixture_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        """Of the given fixtures, those that may not be settled now, each with why (their
        packets wait: nothing is lost)."""
        ...

    async def settle(self, fixture_id: uuid.UUID) -> Settled:
        """Append the events of the packets stored since the checkpoint, and move it to the
        last stored packet, at once: a pass that fails leaves neither."""
        ...
