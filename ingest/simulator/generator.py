"""Deterministic snooker match generator (pure logic: no I/O, no asyncio, stdlib only).

``generate_match(MatchSpec(seed=...))`` plays a whole snooker match with a small stochastic model
(per-player pot probability, safety exchanges, fouls, concessions, re-spotted black, session
intervals) and returns the provider-style Action packets (SPEC sections 1 and 2) in stream order,
together with the ground truth of the match.

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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.feed.vocabulary import (
    ACTION_TYPES,
    BALL_POTTED,
    BREAK_ENDED,
    CANCELLED,
    CONFIRMED,
    DELETED,
    FOUL,
    FRAME_CONCEDED,
    FRAME_ENDED,
    FRAME_STARTED,
    FREE_BALL,
    LINEUPS,
    MATCH_CONDITIONS,
    MATCH_ENDED,
    MATCH_STARTED,
    PENDING,
    RE_RACK,
    RESTORED,
    SEND_TYPES,
    STATUS_UPDATED,
    STRIKER,
    TEAM_COLOURS,
    UPDATED,
    Side,
)

__all__ = [
    "BALL_NAMES",
    "GeneratedMatch",
    "MatchSpec",
    "generate_match",
    "match_id_for_seed",
    "to_jsonl",
]


BALL_NAMES: dict[int, str] = {
    1: "Red",
    2: "Yellow",
    3: "Green",
    4: "Brown",
    5: "Blue",
    6: "Pink",
    7: "Black",
}
POTTED_BALL_KEYS: dict[int, str] = {
    1: "redBalls",
    2: "yellowBalls",
    3: "greenBalls",
    4: "brownBalls",
    5: "blueBalls",
    6: "pinkBalls",
    7: "blackBalls",
}

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
INTERVAL_REASON = ("Interval", 19)
END_OF_SESSION_REASON = ("End of session", 20)

_COLOURS = ("Red", "Blue", "Green", "Yellow", "White", "Black", "Orange", "Purple")

# The colour chosen after a red (index = ball value), by weight.
_COLOUR_CHOICE = (2, 3, 4, 5, 6, 7)
_COLOUR_WEIGHTS = (2, 2, 4, 12, 18, 62)

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
    return _MatchBuilder(spec).build()


# --------------------------------------------------------------------------------------------
# internals


def _other(side: Side) -> Side:
    return "away" if side == "home" else "home"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _format_ts(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _format_clock(seconds: int) -> str:
    minutes, secs = divmod(max(seconds, 0), 60)
    return f"{minutes:02d}:{secs:02d}"


@dataclass
class _Player:
    side: Side
    name: str
    team_id: str
    player_id: str
    skill: float  # probability of potting the next ball once in a break


@dataclass
class _Table:
    """The balls on the table, from the point of view of the rules."""

    reds: int
    colour_due: bool = False  # a red was just potted: any colour is on
    next_colour: int = 2  # colours phase: the lowest colour left; 8 = table cleared
    respot: bool = False  # re-spotted black after a tie

    def in_colours_phase(self) -> bool:
        return self.reds == 0 and not self.colour_due

    def remaining(self) -> int:
        """Most points still available on the table (snookers aside)."""
        if self.respot:
            return 7
        if not self.in_colours_phase():
            return self.reds * 8 + (7 if self.colour_due else 0) + 27
        return sum(range(self.next_colour, 8))

    def final_black(self) -> bool:
        return self.respot or (self.in_colours_phase() and self.next_colour == 7)


@dataclass
class _FrameRecord:
    number: int
    home_points: int = 0
    away_points: int = 0
    winner: Side | None = None
    conceded: bool = False
    respotted_black: bool = False


@dataclass
class _VisitEnd:
    fouled: bool = False
    frame_over: bool = False
    respot_started: bool = False


@dataclass
class _State:
    """What the fixtureSummary shows; frame points come from the effective actions."""

    home_frames: int = 0
    away_frames: int = 0
    current_period: int = 0
    status: str = "Scheduled"
    collection_status: str = "CollectionScheduled"
    clock_running: bool = False
    frozen_clock: int = 0
    frame_started_at: datetime | None = None
    home_in_possession: bool = True
    finished: bool = False
    reason: tuple[str, int] | None = None
    periods: list[dict[str, Any]] = field(default_factory=list)


class _MatchBuilder:
    def __init__(self, spec: MatchSpec) -> None:
        self.spec = spec
        root = random.Random(spec.seed)
        default_fixture = uuid.UUID(int=root.getrandbits(128), version=4)
        self.fixture_id = spec.fixture_id if spec.fixture_id is not None else default_fixture
        self.ids = random.Random(root.getrandbits(64))
        self.game = random.Random(root.getrandbits(64))
        self.timing = random.Random(root.getrandbits(64))
        self.noise = random.Random(root.getrandbits(64))
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
        self.now = start - timedelta(minutes=20)

        self.players: dict[Side, _Player] = {}
        level = self.game.uniform(0.85, 0.92)  # how well this match is played
        sides: tuple[Side, Side] = ("home", "away")
        for side, name in zip(sides, spec.players, strict=True):
            self.players[side] = _Player(
                side=side,
                name=name,
                team_id=str(self._uuid()),
                player_id=str(self._uuid()),
                skill=level + self.game.uniform(-0.015, 0.015),
            )
        self.team_side = {p.team_id: p.side for p in self.players.values()}

        self.state = _State()
        self.packets: list[dict[str, Any]] = []
        self.latest: dict[str, dict[str, Any]] = {}  # actionId -> latest fixtureAction
        self.frames: list[_FrameRecord] = []
        self.breaks: list[dict[str, Any]] = []
        self.fouls: dict[Side, int] = {"home": 0, "away": 0}
        self.pots: dict[Side, int] = {"home": 0, "away": 0}
        self.suspensions_left = self.susp.choice((1, 1, 2)) if spec.suspensions else 0

    # ---- identifiers and time ---------------------------------------------------------------

    def _uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.ids.getrandbits(128), version=4)

    def _advance(self, low: float, high: float) -> None:
        self.now += timedelta(microseconds=round(self.timing.uniform(low, high) * _MICRO))

    def _clock_seconds(self) -> int:
        st = self.state
        if st.clock_running and st.frame_started_at is not None:
            return int((self.now - st.frame_started_at).total_seconds())
        return st.frozen_clock

    # ---- packets ----------------------------------------------------------------------------

    def _contribution(self, fa: dict[str, Any]) -> tuple[int, Side, int] | None:
        """(frame, side credited, points) of an action in effect, else None."""
        if fa["sendTypeId"] in (CANCELLED, DELETED):
            return None
        type_id = fa["fixtureActionTypeId"]
        if type_id == BALL_POTTED:
            side = self.team_side[fa["team"]["id"]]
            return fa["period"], side, int(fa["metadata"]["points"])
        if type_id == FOUL:
            awarded: Side = fa["metadata"]["awardedTo"]
            return fa["period"], awarded, int(fa["metadata"]["foulPoints"])
        return None

    def _apply(self, contribution: tuple[int, Side, int] | None, sign: int) -> None:
        if contribution is None:
            return
        frame, side, points = contribution
        period = self.state.periods[frame - 1]
        key = "homeTeamScore" if side == "home" else "awayTeamScore"
        period[key] += sign * points

    def _summary(self) -> dict[str, Any]:
        st = self.state
        clock = _format_clock(self._clock_seconds())
        return {
            "homeTeamScore": st.home_frames,
            "awayTeamScore": st.away_frames,
            "currentPeriod": st.current_period,
            "currentStatus": st.status,
            "collectionStatus": st.collection_status,
            "currentClockTime": clock,
            "currentClockState": "Running" if st.clock_running else "Stopped",
            "isHomeTeamInPossesion": st.home_in_possession,
            "isTied": st.home_frames == st.away_frames,
            "finished": st.finished,
            "reason": st.reason[0] if st.reason else None,
            "reasonId": st.reason[1] if st.reason else None,
            "periods": [dict(p) for p in st.periods],
        }

    def _publish(self, fa: dict[str, Any], *, finished: bool = False) -> dict[str, Any]:
        """Number ``fa``, fold it into the effective state and append the packet."""
        seq = len(self.packets) + 1
        fa["fixtureSeqNum"] = seq
        fa["timelineSequence"] = float(seq)
        fa["timestamp"] = _format_ts(self.now)
        previous = self.latest.get(fa["actionId"])
        if previous is not None:
            self._apply(self._contribution(previous), -1)
        self._apply(self._contribution(fa), +1)
        self.latest[fa["actionId"]] = fa
        packet = {
            "traceId": f"{self.ids.getrandbits(128):032x}",
            "version": 3,
            "finished": finished,
            "fixtureAction": fa,
            "fixtureSummary": self._summary(),
        }
        self.state.reason = None  # a reason is shown on the packet where the interval starts
        self.packets.append(packet)
        return fa

    def _action(
        self,
        type_id: int,
        *,
        send: int = CONFIRMED,
        side: Side | None = None,
        ball: int | None = None,
        metadata: dict[str, Any] | None = None,
        related: Iterable[str] = (),
    ) -> dict[str, Any]:
        fa: dict[str, Any] = {
            "fixtureId": str(self.fixture_id),
            "actionId": str(self._uuid()),
            "fixtureSeqNum": 0,
            "timelineSequence": 0.0,
            "timestamp": "",
            "period": self.state.current_period,
            "clockTime": _format_clock(self._clock_seconds()),
            "fixtureActionType": ACTION_TYPES[type_id],
            "fixtureActionTypeId": type_id,
        }
        if ball is not None:
            fa["fixtureActionSubType"] = BALL_NAMES[ball]
            fa["fixtureActionSubTypeId"] = ball
        fa["sendType"] = SEND_TYPES[send]
        fa["sendTypeId"] = send
        fa["relatedFixtureActionIds"] = list(related)
        if side is not None:
            player = self.players[side]
            fa["team"] = {"id": player.team_id, "name": player.name}
            fa["player"] = {"id": player.player_id, "name": player.name}
        fa["metadata"] = metadata if metadata is not None else {}
        return fa

    def _emit(self, type_id: int, **kwargs: Any) -> dict[str, Any]:
        finished = bool(kwargs.pop("finished", False))
        return self._publish(self._action(type_id, **kwargs), finished=finished)

    def _resend(self, original: dict[str, Any], send: int, **changes: Any) -> dict[str, Any]:
        """A correction: a new packet for the same actionId (same data unless changed)."""
        self._advance(1.0, 8.0)
        fa = json.loads(json.dumps(original))
        fa.update(changes)
        fa["sendType"] = SEND_TYPES[send]
        fa["sendTypeId"] = send
        return self._publish(fa)

    # ---- match ------------------------------------------------------------------------------

    def build(self) -> GeneratedMatch:
        spec = self.spec
        home, away = self.players["home"], self.players["away"]
        colours = self.game.sample(_COLOURS, 2)
        self._emit(MATCH_CONDITIONS, metadata={"bestOf": spec.best_of, "reds": spec.reds})
        self._advance(30.0, 90.0)
        self._emit(
            TEAM_COLOURS, metadata={"homeTeamColour": colours[0], "awayTeamColour": colours[1]}
        )
        self._advance(30.0, 90.0)
        lineups = {
            p.side: {"teamId": p.team_id, "playerId": p.player_id, "name": p.name}
            for p in (home, away)
        }
        self._emit(LINEUPS, metadata=lineups)
        self.now = max(self.now, self.start)
        st = self.state
        st.status = "Live"
        st.collection_status = "CollectingLive"
        self._emit(MATCH_STARTED)

        breaker: Side = self.game.choice(("home", "away"))
        while not self._match_over():
            self._advance(60.0, 150.0)
            self._play_frame(len(self.frames) + 1, breaker)
            breaker = _other(breaker)

        winner: Side = "home" if st.home_frames > st.away_frames else "away"
        self._advance(20.0, 60.0)
        st.status = "Finished"
        st.finished = True
        self._emit(MATCH_ENDED, side=winner, finished=True)
        return GeneratedMatch(
            fixture_id=self.fixture_id, packets=self.packets, truth=self._truth(winner)
        )

    def _match_over(self) -> bool:
        needed = (self.spec.best_of + 1) // 2
        return max(self.state.home_frames, self.state.away_frames) >= needed

    def _session_length(self) -> int:
        """Frames per session: one session up to best of 15, else about 8-10 frames each."""
        best_of = self.spec.best_of
        sessions = best_of // 8 if best_of >= 17 else 1
        return -(-best_of // sessions)

    def _interval_after(self, frames_done: int) -> tuple[str, int] | None:
        """The break in play that follows frame ``frames_done`` (if the match goes on)."""
        if self._match_over() or self.spec.best_of < 7:
            return None
        length = self._session_length()
        in_session = frames_done % length
        if in_session == 0:
            return END_OF_SESSION_REASON
        if in_session == (4 if length <= 9 else length // 2):
            return INTERVAL_REASON
        return None

    def _sit_out_interval(self, reason: tuple[str, int], frames_done: int) -> None:
        if reason == INTERVAL_REASON:
            self._advance(15 * 60.0, 20 * 60.0)
            return
        # Sessions are scheduled: at the start time and, if it is early enough, six hours later
        # the same day; then the next day. A session that overran gets a shorter break.
        per_day = 2 if self.start.hour <= 14 else 1
        day, later = divmod(frames_done // self._session_length(), per_day)
        scheduled = self.start + timedelta(days=day, hours=6 * later)
        self.now = max(self.now + timedelta(minutes=30), scheduled)
        self._advance(0.0, 90.0)

    def _maybe_suspend(self) -> None:
        if self.suspensions_left <= 0 or self.susp.random() >= 1 / 150:
            return
        self.suspensions_left -= 1
        reason, code = self.susp.choice(_SUSPENSION_REASONS)
        st = self.state
        self._advance(2.0, 20.0)
        st.collection_status = "CollectionSuspended"
        self._emit(STATUS_UPDATED, metadata=self._status_metadata(reason, code))
        self.now += timedelta(microseconds=round(self.susp.uniform(60.0, 300.0) * _MICRO))
        st.collection_status = "CollectingLive"
        self._emit(STATUS_UPDATED, metadata=self._status_metadata(None, None))

    def _status_metadata(self, reason: str | None, code: int | None) -> dict[str, Any]:
        return {
            "coverageLevel": 3,
            "fixtureStatus": 1,
            "collectionStatus": COLLECTION_STATUS_CODES[self.state.collection_status],
            "collectionStatusReason": reason,
            "collectionStatusReasonCode": code,
        }

    # ---- frames -----------------------------------------------------------------------------

    def _play_frame(self, number: int, breaker: Side) -> None:
        st = self.state
        g = self.game
        st.status = "Live"
        st.current_period = number
        st.frame_started_at = self.now
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
        record = _FrameRecord(number)
        self.frames.append(record)
        started = self._emit(FRAME_STARTED, side=breaker)

        table = _Table(self.spec.reds)
        points: dict[Side, int] = {"home": 0, "away": 0}
        striker = breaker
        visits = 0
        rerack_planned = g.random() < 0.015
        conceded_by: Side | None = None
        free_ball = False
        while True:
            self._maybe_suspend()
            self._advance(3.0, 10.0)
            st.home_in_possession = striker == "home"
            if free_ball:
                self._emit(FREE_BALL, side=striker)
                self._advance(2.0, 6.0)
            self._emit(STRIKER, side=striker)
            self._maybe_spurious_foul(striker)
            visits += 1
            end = self._visit(striker, table, points, break_off=visits == 1)
            if end.frame_over:
                break
            free_ball = end.fouled and g.random() < 0.1
            if end.respot_started:
                record.respotted_black = True
                striker = g.choice(("home", "away"))
                free_ball = False
                continue
            if not table.respot:
                trailing: Side = "home" if points["home"] < points["away"] else "away"
                deficit = abs(points["home"] - points["away"])
                if deficit > table.remaining() and g.random() < 0.75:
                    conceded_by = trailing
                    break
            if (
                rerack_planned
                and visits >= 4
                and points["home"] == points["away"] == 0
                and table.reds == self.spec.reds
                and not table.colour_due
            ):
                rerack_planned = False
                self._advance(20.0, 60.0)
                self._emit(RE_RACK)
                self._advance(60.0, 120.0)
                striker = breaker
                visits = 0
                free_ball = False
                continue
            striker = _other(striker)

        if conceded_by is not None:
            record.conceded = True
            self._advance(5.0, 20.0)
            st.home_in_possession = conceded_by == "home"
            self._emit(FRAME_CONCEDED, side=conceded_by)
        winner: Side = "home" if points["home"] > points["away"] else "away"
        period = st.periods[number - 1]
        if (period["homeTeamScore"], period["awayTeamScore"]) != (points["home"], points["away"]):
            raise RuntimeError("generator bug: summary points differ from the frame's points")
        record.home_points, record.away_points, record.winner = (
            points["home"],
            points["away"],
            winner,
        )
        self._advance(2.0, 8.0)
        st.frozen_clock = self._clock_seconds()
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
        ended = self._emit(
            FRAME_ENDED,
            side=winner,
            metadata={"homePoints": points["home"], "awayPoints": points["away"]},
            related=[started["actionId"]],
        )
        if number in self.spec.frame_end_corrections:
            self._take_back_frame_end(ended, period, winner)
        if interval is not None:
            self._sit_out_interval(interval, number)

    def _take_back_frame_end(
        self, ended: dict[str, Any], period: dict[str, Any], winner: Side
    ) -> None:
        """Frame Ended, Cancelled (the summary shows the frame unfinished), then Restored."""
        st, step = self.state, {"home": (1, 0), "away": (0, 1)}[winner]
        period["isFinished"], period["winner"] = False, None
        st.home_frames, st.away_frames = st.home_frames - step[0], st.away_frames - step[1]
        self._resend(ended, CANCELLED)
        period["isFinished"], period["winner"] = True, winner
        st.home_frames, st.away_frames = st.home_frames + step[0], st.away_frames + step[1]
        self._resend(ended, RESTORED)

    def _choose_ball(self, table: _Table, maximum_on: bool = False) -> int:
        if table.respot:
            return 7
        if table.colour_due:
            if maximum_on and self.game.random() < 0.35:  # a maximum is on: favour the black
                return 7
            return self.game.choices(_COLOUR_CHOICE, weights=_COLOUR_WEIGHTS)[0]
        if table.reds > 0:
            return 1
        return table.next_colour

    def _foul_value(self, table: _Table, ball_on: int) -> int:
        """Foul points: the value of the ball on or of a ball involved, at least 4."""
        value = ball_on
        if self.game.random() < 0.15:
            value = max(value, self.game.randint(2, 7))
        return max(4, min(7, value))

    def _visit(
        self, side: Side, table: _Table, points: dict[Side, int], *, break_off: bool
    ) -> _VisitEnd:
        """One visit to the table; emits its pots, the foul ending it and its Break Ended."""
        g = self.game
        skill = self.players[side].skill
        potted: list[tuple[int, str]] = []
        score = 0
        foul_points = 0
        end = _VisitEnd()

        if break_off:
            if g.random() < 0.03:
                foul_points = 4
        elif table.respot:
            roll = g.random()
            if roll < 0.3:
                potted.append(self._pot(side, 7, score + 7))
                score += 7
                points[side] += 7
                end.frame_over = True
            elif roll < 0.36:
                foul_points = 7
        else:
            roll = g.random()
            chance = 0.30 + (skill - 0.82) * 2.0
            if roll < 0.06:
                foul_points = self._foul_value(table, self._choose_ball(table))
            elif roll < 0.06 + chance:
                p = skill - 0.12  # the first pot is the hard one
                maximum_on = table.reds == self.spec.reds
                while True:
                    maximum_on = maximum_on and all(b in (1, 7) for b, _ in potted)
                    ball = self._choose_ball(table, maximum_on)
                    if g.random() >= p:
                        if g.random() < 0.07:
                            foul_points = self._foul_value(table, ball)
                        break
                    potted.append(self._pot(side, ball, score + ball))
                    score += ball
                    points[side] += ball
                    if table.colour_due:
                        table.colour_due = False
                    elif table.reds > 0:
                        table.reds -= 1
                        table.colour_due = True
                    else:
                        table.next_colour += 1
                        if table.next_colour == 8:
                            if points["home"] == points["away"]:
                                table.respot = True
                                table.next_colour = 7
                                end.respot_started = True
                            else:
                                end.frame_over = True
                            break
                    p = skill if len(potted) < 6 else min(0.97, skill + 0.025)  # in rhythm

        final_black = table.final_black() and not end.respot_started
        if foul_points:
            self._advance(10.0, 40.0)
            self._emit(
                FOUL,
                side=side,
                metadata={"foulPoints": foul_points, "awardedTo": _other(side)},
            )
            self.fouls[side] += 1
            points[_other(side)] += foul_points
            end.fouled = True
            if final_black:
                if points["home"] == points["away"]:  # fouled the last black into a tie
                    table.respot = True
                    end.respot_started = True
                else:
                    end.frame_over = True
        elif not end.frame_over and not end.respot_started:
            self._advance(10.0, 30.0 if potted else 45.0)  # the missed pot or the safety
        table.colour_due = False  # the next visit starts on a red (or the lowest colour)

        if potted:
            self._advance(1.0, 4.0)
            counts = {key: 0 for key in POTTED_BALL_KEYS.values()}
            for ball, _ in potted:
                counts[POTTED_BALL_KEYS[ball]] += 1
            self.pots[side] += len(potted)
            self._emit(
                BREAK_ENDED,
                side=side,
                metadata={"breakScore": score, "pottedBalls": counts},
                related=[action_id for _, action_id in potted],
            )
            self.breaks.append(
                {
                    "frame_number": self.state.current_period,
                    "side": side,
                    "player_id": self.players[side].player_id,
                    "break_score": score,
                }
            )
        return end

    def _pot(self, side: Side, ball: int, break_score: int) -> tuple[int, str]:
        """Emit a Ball Potted (with its correction packets, if any); (ball, actionId)."""
        if break_score == ball:  # the first pot of the visit takes longer
            self._advance(15.0, 40.0)
        else:
            self._advance(10.0, 25.0)

        def meta(value: int, running: int) -> dict[str, Any]:
            return {"points": value, "breakScore": running}

        roll = self.noise.random() if self.spec.corrections else 1.0
        if roll < 0.05:  # sent Pending, then Confirmed
            fa = self._emit(
                BALL_POTTED, send=PENDING, side=side, ball=ball, metadata=meta(ball, break_score)
            )
            self._resend(fa, CONFIRMED)
        elif roll < 0.065 and ball >= 2:  # wrong colour sent, then Updated to the right one
            wrong = self.noise.choice([b for b in range(2, 8) if b != ball and abs(b - ball) <= 2])
            fa = self._emit(
                BALL_POTTED,
                side=side,
                ball=wrong,
                metadata=meta(wrong, break_score - ball + wrong),
            )
            self._resend(
                fa,
                UPDATED,
                fixtureActionSubType=BALL_NAMES[ball],
                fixtureActionSubTypeId=ball,
                metadata=meta(ball, break_score),
            )
        elif roll < 0.0665:  # deleted by mistake, then Restored
            fa = self._emit(BALL_POTTED, side=side, ball=ball, metadata=meta(ball, break_score))
            self._resend(fa, DELETED)
            self._resend(fa, RESTORED)
        else:
            fa = self._emit(BALL_POTTED, side=side, ball=ball, metadata=meta(ball, break_score))
        return ball, str(fa["actionId"])

    def _maybe_spurious_foul(self, side: Side) -> None:
        """A foul that did not happen: Pending then Cancelled, or Confirmed then Deleted."""
        if not self.spec.corrections:
            return
        roll = self.noise.random()
        if roll >= 0.008:
            return
        self._advance(2.0, 10.0)
        metadata = {"foulPoints": 4, "awardedTo": _other(side)}
        if roll < 0.004:
            fa = self._emit(FOUL, send=PENDING, side=side, metadata=metadata)
            self._resend(fa, CANCELLED)
        else:
            fa = self._emit(FOUL, side=side, metadata=metadata)
            self._resend(fa, DELETED)

    # ---- truth ------------------------------------------------------------------------------

    def _truth(self, winner: Side) -> dict[str, Any]:
        st = self.state
        return {
            "fixture_id": str(self.fixture_id),
            "best_of": self.spec.best_of,
            "reds": self.spec.reds,
            **{
                side: {"team_id": p.team_id, "player_id": p.player_id, "name": p.name}
                for side, p in self.players.items()
            },
            "winner": winner,
            "home_frames": st.home_frames,
            "away_frames": st.away_frames,
            "frames": [
                {
                    "frame_number": f.number,
                    "home_points": f.home_points,
                    "away_points": f.away_points,
                    "winner": f.winner,
                    "conceded": f.conceded,
                    "respotted_black": f.respotted_black,
                }
                for f in self.frames
            ],
            "breaks": list(self.breaks),
            "fouls": dict(self.fouls),
            "pots": dict(self.pots),
            "packets": len(self.packets),
        }
