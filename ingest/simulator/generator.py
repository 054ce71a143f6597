"""Deterministic snooker match generator (pure logic: no I/O, no asyncio, stdlib only).

``generate_match(MatchSpec(seed=...))`` plays a whole snooker match with a small stochastic model
(per-player pot probability, safety exchanges, fouls, concessions, re-spotted black, session
intervals) and returns the provider-style Action packets (docs/feed.md, docs/match.md) in stream
order, together with the ground truth of the match.

This module plays the match: its frames, visits, suspensions and intervals. The parts it drives
have modules of their own: :mod:`~ingest.simulator.table` the table state (balls on, points),
:mod:`~ingest.simulator.shots` the shot model (how a visit goes), :mod:`~ingest.simulator.packets`
the packet emission (numbering, timestamps, the ``fixtureSummary``),
:mod:`~ingest.simulator.scorer` the scorer's mistakes and corrections,
:mod:`~ingest.simulator.sessions` the schedule, :mod:`~ingest.simulator.truth` the ground truth.

Model notes

* Every packet carries a ``fixtureSummary`` that reflects the *effective* state after that packet:
  the effective state of an action is its latest packet, and actions whose latest packet is
  Cancelled (3) or Deleted (4) do not count; Pending (1), Updated (2), Confirmed (5) and
  Restored (6) do. Frame points in ``periods`` are therefore always the sum of the effective Ball
  Potted points of a side plus the effective foul points awarded to it.
* Corrections are always resolved by the packet(s) immediately following the original one (a
  Pending pot is confirmed by the next packet, a wrong subtype is updated by the next packet, ...),
  so ordering effective actions by the sequence number of their first packet gives the real order
  of play. Frame Ended, Match Ended, Break Ended, Striker and Frame Started/Conceded packets are
  never corrected.
* A visit to the table starts with a Striker packet; a visit that scored ends with a Break Ended
  packet (emitted after the Foul that ended it, if any). A visit always starts on a red while reds
  remain; once the reds are gone the colours are taken in order, and the lowest colour on the
  table is "on" for the next visit.
* Play: each player has a pot probability (a per-match level in 0.85-0.92, +-0.015 per player).
  A visit is a safety, a foul or a scoring chance; the first pot of a chance is harder, and a
  player in rhythm (6+ pots) pots slightly more. After a red the black is usually taken, a bit
  more often while a maximum is on. Over many best-of-19 matches: ~60% of breaks are under 30,
  ~12 breaks of 50+ and ~2.6 centuries a match, a 147 about once in 1,200 frames (never with
  6 reds, whose maximum is 75), ~half the frames conceded by a player needing snookers.
* Sessions: one session up to best of 15 (mid-session Interval, reasonId 19, after frame 4 from
  best of 7 up); from best of 17, sessions of about 8-10 frames (best of 19: 10 + 9) with a
  mid-session interval and End of session (reasonId 20) breaks, two sessions a day when the
  match starts by 14:00 UTC. The reason is shown on the Frame Ended packet where the break starts.
* Free Ball (12) is emitted, rarely, for the player coming to the table after a foul; the points
  logic of a free ball is not modelled (the player then plays the ball on as usual).
* Re-rack (13) happens rarely, only at 0-0 early in a frame after a safety exchange; the same
  player breaks off again.
* The same seed plays the same match whatever ``corrections``/``suspensions``/``fixture_id``/
  ``start`` say: the match, the correction noise, the suspensions, the timing and the identifiers
  each draw from their own ``random.Random`` derived from the seed.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.feed.vocabulary import (
    ACTION_TYPES,
    BREAK_ENDED,
    FOUL,
    FRAME_CONCEDED,
    FRAME_ENDED,
    FRAME_STARTED,
    FREE_BALL,
    LINEUPS,
    MATCH_CONDITIONS,
    MATCH_ENDED,
    MATCH_STARTED,
    RE_RACK,
    SEND_TYPES,
    STATUS_UPDATED,
    STRIKER,
    TEAM_COLOURS,
    Side,
)
from ingest.simulator.packets import Clock, Packets, Summary, random_uuid
from ingest.simulator.scorer import Scorer
from ingest.simulator.sessions import INTERVAL_REASON, interval_after, next_session
from ingest.simulator.shots import Player, Visit, concession, opponent, play_visit
from ingest.simulator.table import BALL_NAMES, POTTED_BALL_KEYS, Table
from ingest.simulator.truth import FrameRecord, Truth

__all__ = [
    "ACTION_TYPES",  # the vocabulary's, imported from here by tests
    "BALL_NAMES",
    "SEND_TYPES",  # the vocabulary's, imported from here by tests
    "GeneratedMatch",
    "MatchSpec",
    "generate_match",
    "match_id_for_seed",
    "to_jsonl",
]


# Collection status codes used in Status Updated metadata (the sample packet has 3 = suspended).
COLLECTION_STATUS_CODES: dict[str, int] = {
    "CollectionScheduled": 1,
    "CollectingLive": 2,
    "CollectionSuspended": 3,
}
_SUSPENSION_REASONS: tuple[tuple[str, int], ...] = (
    ("no signal", 1),
    ("scorer disconnected", 2),
    ("technical issue", 3),
)

_COLOURS = ("Red", "Blue", "Green", "Yellow", "White", "Black", "Orange", "Purple")

_MICRO = 1_000_000


@dataclass(frozen=True)
class MatchSpec:
    """What to generate. Everything not given is derived deterministically from ``seed``."""

    seed: int
    best_of: int = 7
    players: tuple[str, str] = ("Home Player", "Away Player")
    fixture_id: uuid.UUID | None = None
    reds: int = 15
    start: datetime | None = None
    corrections: bool = True
    suspensions: bool = True
    # frames whose Frame Ended the scorer takes back (Cancelled) and then Restores; the
    # fixtureSummary follows (the frame is unfinished in between)
    frame_end_corrections: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.best_of < 1 or self.best_of % 2 == 0:
            raise ValueError(f"best_of must be odd and >= 1, got {self.best_of}")
        if self.reds not in (6, 15):
            raise ValueError(f"reds must be 15 or 6, got {self.reds}")
        if len(self.players) != 2 or not all(self.players):
            raise ValueError("players must be two non-empty names")


@dataclass(frozen=True)
class GeneratedMatch:
    fixture_id: uuid.UUID
    packets: list[dict[str, Any]]
    truth: dict[str, Any]


def match_id_for_seed(seed: int) -> uuid.UUID:
    """The default fixture id of a seed (the first 128 bits of ``random.Random(seed)``)."""
    return uuid.UUID(int=random.Random(seed).getrandbits(128), version=4)


def to_jsonl(packets: Iterable[dict[str, Any]]) -> str:
    """One compact JSON document per line, each line terminated by a newline."""
    return "".join(json.dumps(p, separators=(",", ":")) + "\n" for p in packets)


def generate_match(spec: MatchSpec) -> GeneratedMatch:
    """Play the match described by ``spec``; same spec, same packets (byte for byte)."""
    return _Match(spec).play()


# --------------------------------------------------------------------------------------------
# internals


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class _Match:
    """One match being played. Its randomness comes from ``random.Random``s derived from the seed,
    one per concern: ``ids``, ``game`` (the shot model and the match's decisions), ``timing``
    (the :class:`Clock`), ``noise`` (the :class:`Scorer`'s mistakes) and ``susp``."""

    def __init__(self, spec: MatchSpec) -> None:
        self.spec = spec
        root = random.Random(spec.seed)
        default_fixture = uuid.UUID(int=root.getrandbits(128), version=4)
        self.fixture_id = spec.fixture_id if spec.fixture_id is not None else default_fixture
        ids = random.Random(root.getrandbits(64))
        self.game = random.Random(root.getrandbits(64))
        timing = random.Random(root.getrandbits(64))
        noise = random.Random(root.getrandbits(64))
        self.susp = random.Random(root.getrandbits(64))
        default_start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(
            days=root.randrange(365), hours=root.choice((10, 13, 14, 19))
        )
        if spec.start is None:
            start = default_start
        elif spec.start.tzinfo is None:
            start = spec.start.replace(tzinfo=UTC)
        else:
            start = spec.start.astimezone(UTC)
        self.start = start
        self.clock = Clock(timing, start - timedelta(minutes=20))
        self.players = self._players(ids)
        self.summary = Summary()
        self.packets = Packets(self.fixture_id, ids, self.clock, self.summary, self.players)
        self.scorer = Scorer(self.packets, noise, mistakes=spec.corrections)
        self.truth = Truth()
        self.suspensions_left = self.susp.choice((1, 1, 2)) if spec.suspensions else 0

    def _players(self, ids: random.Random) -> dict[Side, Player]:
        players: dict[Side, Player] = {}
        level = self.game.uniform(0.85, 0.92)  # how well this match is played
        sides: tuple[Side, Side] = ("home", "away")
        for side, name in zip(sides, self.spec.players, strict=True):
            players[side] = Player(
                side=side,
                name=name,
                team_id=str(random_uuid(ids)),
                player_id=str(random_uuid(ids)),
                skill=level + self.game.uniform(-0.015, 0.015),
            )
        return players

    # ---- match ------------------------------------------------------------------------------

    def play(self) -> GeneratedMatch:
        self._before_the_match()
        st = self.summary
        breaker: Side = self.game.choice(("home", "away"))
        while not self._match_over():
            self.clock.advance(60.0, 150.0)
            self._play_frame(len(self.truth.frames) + 1, breaker)
            breaker = opponent(breaker)

        winner: Side = "home" if st.home_frames > st.away_frames else "away"
        self.clock.advance(20.0, 60.0)
        st.status = "Finished"
        st.finished = True
        self.packets.emit(MATCH_ENDED, side=winner, finished=True)
        truth = self.truth.as_json(
            fixture_id=self.fixture_id,
            best_of=self.spec.best_of,
            reds=self.spec.reds,
            players=self.players,
            winner=winner,
            frames_won=(st.home_frames, st.away_frames),
            packets=len(self.packets.sent),
        )
        return GeneratedMatch(fixture_id=self.fixture_id, packets=self.packets.sent, truth=truth)

    def _before_the_match(self) -> None:
        """Match Conditions, Team Colours, Lineups, then Match Started at the start time."""
        spec, packets, clock = self.spec, self.packets, self.clock
        colours = self.game.sample(_COLOURS, 2)
        packets.emit(MATCH_CONDITIONS, metadata={"bestOf": spec.best_of, "reds": spec.reds})
        clock.advance(30.0, 90.0)
        packets.emit(
            TEAM_COLOURS, metadata={"homeTeamColour": colours[0], "awayTeamColour": colours[1]}
        )
        clock.advance(30.0, 90.0)
        lineups: dict[str, Any] = {
            p.side: {"teamId": p.team_id, "playerId": p.player_id, "name": p.name}
            for p in (self.players["home"], self.players["away"])
        }
        packets.emit(LINEUPS, metadata=lineups)
        clock.now = max(clock.now, self.start)
        self.summary.status = "Live"
        self.summary.collection_status = "CollectingLive"
        packets.emit(MATCH_STARTED)

    def _match_over(self) -> bool:
        needed = (self.spec.best_of + 1) // 2
        return max(self.summary.home_frames, self.summary.away_frames) >= needed

    def _interval_after(self, frames_done: int) -> tuple[str, int] | None:
        """The break in play that follows frame ``frames_done`` (if the match goes on)."""
        if self._match_over():
            return None
        return interval_after(self.spec.best_of, frames_done)

    def _sit_out_interval(self, reason: tuple[str, int], frames_done: int) -> None:
        if reason == INTERVAL_REASON:
            self.clock.advance(15 * 60.0, 20 * 60.0)
            return
        # A session that overran gets a shorter break.
        scheduled = next_session(self.start, self.spec.best_of, frames_done)
        self.clock.now = max(self.clock.now + timedelta(minutes=30), scheduled)
        self.clock.advance(0.0, 90.0)

    def _maybe_suspend(self) -> None:
        if self.suspensions_left <= 0 or self.susp.random() >= 1 / 150:
            return
        self.suspensions_left -= 1
        reason, code = self.susp.choice(_SUSPENSION_REASONS)
        st = self.summary
        self.clock.advance(2.0, 20.0)
        st.collection_status = "CollectionSuspended"
        self.packets.emit(STATUS_UPDATED, metadata=self._status_metadata(reason, code))
        self.clock.now += timedelta(microseconds=round(self.susp.uniform(60.0, 300.0) * _MICRO))
        st.collection_status = "CollectingLive"
        self.packets.emit(STATUS_UPDATED, metadata=self._status_metadata(None, None))

    def _status_metadata(self, reason: str | None, code: int | None) -> dict[str, Any]:
        return {
            "coverageLevel": 3,
            "fixtureStatus": 1,
            "collectionStatus": COLLECTION_STATUS_CODES[self.summary.collection_status],
            "collectionStatusReason": reason,
            "collectionStatusReasonCode": code,
        }

    # ---- frames -----------------------------------------------------------------------------

    def _play_frame(self, number: int, breaker: Side) -> None:
        started = self._start_frame(number, breaker)
        record = FrameRecord(number)
        self.truth.frames.append(record)
        table = Table(self.spec.reds)
        conceded_by = self._play_visits(breaker, table, record)
        if conceded_by is not None:
            record.conceded = True
            self.clock.advance(5.0, 20.0)
            self.summary.home_in_possession = conceded_by == "home"
            self.packets.emit(FRAME_CONCEDED, side=conceded_by)
        self._end_frame(number, started, table, record)

    def _start_frame(self, number: int, breaker: Side) -> dict[str, Any]:
        """The frame's period in the summary and its Frame Started; its ``fixtureAction``."""
        st = self.summary
        st.status = "Live"
        st.current_period = number
        st.frame_started_at = self.clock.now
        st.clock_running = True
        st.home_in_possession = breaker == "home"
        st.periods.append(
            {
                "periodNumber": number,
                "label": f"{_ordinal(number)} frame",
                "homeTeamScore": 0,
                "awayTeamScore": 0,
                "isFinished": False,
                "winner": None,
            }
        )
        return self.packets.emit(FRAME_STARTED, side=breaker)

    def _play_visits(self, breaker: Side, table: Table, record: FrameRecord) -> Side | None:
        """Visits to the table until the frame is over; the side that conceded it, if one did."""
        g = self.game
        striker = breaker
        visits = 0
        rerack_planned = g.random() < 0.015
        free_ball = False
        while True:
            visits += 1
            visit = self._visit(striker, table, free_ball=free_ball, break_off=visits == 1)
            if visit.frame_over:
                return None
            free_ball = visit.fouled and g.random() < 0.1
            if visit.respot_started:
                record.respotted_black = True
                striker = g.choice(("home", "away"))
                free_ball = False
                continue
            conceded_by = concession(g, table)
            if conceded_by is not None:
                return conceded_by
            if (
                rerack_planned
                and visits >= 4
                and table.points["home"] == table.points["away"] == 0
                and table.reds == table.racked
                and not table.colour_due
            ):
                rerack_planned = False
                self.clock.advance(20.0, 60.0)
                self.packets.emit(RE_RACK)
                self.clock.advance(60.0, 120.0)
                striker = breaker
                visits = 0
                free_ball = False
                continue
            striker = opponent(striker)

    def _visit(self, side: Side, table: Table, *, free_ball: bool, break_off: bool) -> Visit:
        """One visit to the table: a Free Ball if awarded, the Striker, the shot model's play,
        and its packets: the pots, the foul ending it, its Break Ended."""
        self._maybe_suspend()
        self.clock.advance(3.0, 10.0)
        self.summary.home_in_possession = side == "home"
        if free_ball:
            self.packets.emit(FREE_BALL, side=side)
            self.clock.advance(2.0, 6.0)
        self.packets.emit(STRIKER, side=side)
        self.scorer.spurious_foul(side)
        visit = play_visit(self.game, self.players[side], table, break_off=break_off)
        potted: list[str] = []  # the Ball Potted actionIds
        score = 0
        for ball in visit.balls:
            score += ball
            if score == ball:  # the first pot of the visit takes longer
                self.clock.advance(15.0, 40.0)
            else:
                self.clock.advance(10.0, 25.0)
            potted.append(self.scorer.pot(side, ball, score))
        if visit.foul_points:
            self.clock.advance(10.0, 40.0)
            self.packets.emit(
                FOUL,
                side=side,
                metadata={"foulPoints": visit.foul_points, "awardedTo": opponent(side)},
            )
            self.truth.fouls[side] += 1
        elif not visit.frame_over and not visit.respot_started:
            self.clock.advance(10.0, 30.0 if potted else 45.0)  # the missed pot or the safety
        if potted:
            self._end_break(side, visit.balls, score, potted)
        return visit

    def _end_break(self, side: Side, balls: list[int], score: int, potted: list[str]) -> None:
        self.clock.advance(1.0, 4.0)
        counts = {key: 0 for key in POTTED_BALL_KEYS.values()}
        for ball in balls:
            counts[POTTED_BALL_KEYS[ball]] += 1
        self.truth.pots[side] += len(balls)
        self.packets.emit(
            BREAK_ENDED,
            side=side,
            metadata={"breakScore": score, "pottedBalls": counts},
            related=potted,
        )
        self.truth.breaks.append(
            {
                "frame_number": self.summary.current_period,
                "side": side,
                "player_id": self.players[side].player_id,
                "break_score": score,
            }
        )

    def _end_frame(
        self, number: int, started: dict[str, Any], table: Table, record: FrameRecord
    ) -> None:
        """The frame's result in the summary, its Frame Ended, and the interval after it."""
        st, points = self.summary, table.points
        winner: Side = "home" if points["home"] > points["away"] else "away"
        period = st.periods[number - 1]
        if (period["homeTeamScore"], period["awayTeamScore"]) != (points["home"], points["away"]):
            raise RuntimeError("generator bug: summary points differ from the frame's points")
        record.home_points, record.away_points, record.winner = (
            points["home"],
            points["away"],
            winner,
        )
        self.clock.advance(2.0, 8.0)
        st.frozen_clock = st.clock_seconds(self.clock.now)
        st.clock_running = False
        period["isFinished"] = True
        period["winner"] = winner
        if winner == "home":
            st.home_frames += 1
        else:
            st.away_frames += 1
        interval = self._interval_after(number)
        if interval is not None:  # shown on the packet where the interval starts
            st.status = "Interval"
            st.reason = interval
        ended = self.packets.emit(
            FRAME_ENDED,
            side=winner,
            metadata={"homePoints": points["home"], "awayPoints": points["away"]},
            related=[started["actionId"]],
        )
        if number in self.spec.frame_end_corrections:
            self.scorer.take_back_frame_end(ended, period, winner)
        if interval is not None:
            self._sit_out_interval(interval, number)
