"""The provider's vocabulary, written once: action types, send types, collection statuses, where a
Lineups packet names the teams, and the home/away rule.

Used by the parser (:mod:`ingest.feed.packet`), the write path (:mod:`ingest.db.actions`),
settlement (:mod:`ingest.settlement.markets`), the match generator and the tests. The SQL views
(migration 0003) apply the same home/away rule in SQL (the ``fixture_lineups`` view):
``tests/integration/test_store.py`` holds the write path's sides to it, and
``tests/integration/test_market_rules.py`` settlement's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import orjson

# fixtureActionTypeId -> fixtureActionType (docs/match.md)
MATCH_CONDITIONS = 1
TEAM_COLOURS = 2
LINEUPS = 3  # the packet that says which team (and player) is home and which away
MATCH_STARTED = 4
MATCH_ENDED = 5
FRAME_STARTED = 6
FRAME_ENDED = 7
STRIKER = 8
BALL_POTTED = 9
FOUL = 10
BREAK_ENDED = 11
FREE_BALL = 12
RE_RACK = 13
FRAME_CONCEDED = 14
STATUS_UPDATED = 22

ACTION_TYPES: dict[int, str] = {
    MATCH_CONDITIONS: "Match Conditions",
    TEAM_COLOURS: "Team Colours",
    LINEUPS: "Lineups",
    MATCH_STARTED: "Match Started",
    MATCH_ENDED: "Match Ended",
    FRAME_STARTED: "Frame Started",
    FRAME_ENDED: "Frame Ended",
    STRIKER: "Striker",
    BALL_POTTED: "Ball Potted",
    FOUL: "Foul",
    BREAK_ENDED: "Break Ended",
    FREE_BALL: "Free Ball",
    RE_RACK: "Re-rack",
    FRAME_CONCEDED: "Frame Conceded",
    STATUS_UPDATED: "Status Updated",
}

# sendTypeId -> sendType: how a packet changes its action (the latest packet of an action wins)
PENDING, UPDATED, CANCELLED, DELETED, CONFIRMED, RESTORED = 1, 2, 3, 4, 5, 6
SEND_TYPES: dict[int, str] = {
    PENDING: "Pending",
    UPDATED: "Updated",
    CANCELLED: "Cancelled",
    DELETED: "Deleted",
    CONFIRMED: "Confirmed",
    RESTORED: "Restored",
}
VOIDING_SEND_TYPES = (CANCELLED, DELETED)  # an action whose latest packet is one counts nowhere

# fixtureSummary.collectionStatus
COLLECTION_SCHEDULED = "CollectionScheduled"
COLLECTING_LIVE = "CollectingLive"
COLLECTION_SUSPENDED = "CollectionSuspended"
COLLECTION_DROPPED = "CollectionDropped"  # the provider gave the match up: it will not finish

Side = Literal["home", "away"]
SIDES: tuple[Side, Side] = ("home", "away")


def action_key(action_id: str | None, seq: int) -> str:
    """The logical action a packet belongs to: its ``actionId`` (every correction reuses it),
    or, without one, the packet alone (as in the views, where a NULL ``action_id`` matches no
    other packet)."""
    return action_id if action_id is not None else f"seq:{seq}"


# Where a Lineups packet names the teams: fixtureAction.metadata.{home,away}.teamId (SQL paths
# for the database side; ingest.feed.packet reads the same keys)
LINEUP_TEAM_PATHS: dict[Side, str] = {
    side: f"{{fixtureAction,metadata,{side},teamId}}" for side in SIDES
}


def lineup_counts(send_type_id: int | None) -> bool:
    """Does a Lineups action whose latest packet has this send type count (see below)?"""
    return send_type_id not in VOIDING_SEND_TYPES


@dataclass(frozen=True)
class LineupPacket:
    """The latest packet of one Lineups action: its seq, the home and away team ids it names,
    its send type and its action type (a Lineups action Updated to another type is no longer
    a Lineups)."""

    seq: int
    home: str | None
    away: str | None
    send_type_id: int | None
    type_id: int | None = LINEUPS

    @property
    def counts(self) -> bool:
        return self.type_id == LINEUPS and lineup_counts(self.send_type_id)


def lineup_in_effect(latest: Iterable[LineupPacket]) -> LineupPacket | None:
    """The home/away rule, as the ``fixture_lineups`` view applies it: of a fixture's Lineups
    actions, each in its latest packet, those still Lineups and not Cancelled or Deleted count,
    and the one sent last (highest seq) is in effect."""
    counting = [p for p in latest if p.counts]
    return max(counting, key=lambda p: p.seq, default=None)


def side_map(home: str | None, away: str | None) -> dict[str, Side]:
    """Team id -> its side, from the Lineups in effect (a team not named has no side)."""
    sides: dict[str, Side] = {}
    if home is not None:
        sides[home] = "home"
    if away is not None:
        sides[away] = "away"
    return sides


class Lineups:
    """One fixture's home/away rule, fed its packets one by one: the latest packet of each
    Lineups action, the Lineups in effect (:func:`lineup_in_effect`) and the side of each team
    it names. The write path fills ``actions.side`` with it; settlement folds it as it replays a
    match; the ``fixture_lineups`` view is its SQL twin (``tests/integration/test_store.py``)."""

    __slots__ = ("actions", "in_effect", "sides")

    def __init__(self) -> None:
        self.actions: dict[str, LineupPacket] = {}  # action key -> its latest packet
        self.in_effect: LineupPacket | None = None
        self.sides: dict[str, Side] = {}  # team id -> side, by the Lineups in effect

    def concerns(self, type_id: int | None, action_id: str | None) -> bool:
        """Is a packet of this type and action one of a Lineups action (a Lineups, or a later
        packet of an action that was one)?"""
        return type_id == LINEUPS or (action_id is not None and action_id in self.actions)

    def see(self, key: str, packet: LineupPacket) -> None:
        """A packet of a Lineups action (:meth:`concerns`), in any order: the later one wins."""
        known = self.actions.get(key)
        if known is not None and known.seq > packet.seq:
            return
        self.actions[key] = packet
        self.in_effect = lineup_in_effect(self.actions.values())
        effect = self.in_effect
        self.sides = side_map(effect.home, effect.away) if effect is not None else {}

    def side(self, team_id: str | None, stored: str | None = None) -> Side | None:
        """A team's side by the Lineups in effect; for a team it does not name, ``stored`` (the
        side the write path stored, by the Lineups in effect then), as the views coalesce
        them."""
        side = self.sides.get(team_id) if team_id is not None else None
        if side is None and stored in SIDES:
            return "home" if stored == "home" else "away"
        return side


def is_dropped(payload: str) -> bool:
    """Does this packet say the provider dropped the collection? The same JSON paths as the
    ``match_results`` view: ``fixtureSummary.collectionStatus`` or the action's
    ``metadata.collectionStatus``."""
    try:
        packet = orjson.loads(payload)
    except orjson.JSONDecodeError:  # nested beyond orjson's limit, or beyond 64-bit integers
        return False
    if not isinstance(packet, dict):
        return False
    for outer, inner in (("fixtureSummary", None), ("fixtureAction", "metadata")):
        node = packet.get(outer)
        if inner is not None and isinstance(node, dict):
            node = node.get(inner)
        if isinstance(node, dict) and node.get("collectionStatus") == COLLECTION_DROPPED:
            return True
    return False
