"""The market rules of ingest.settlement.markets, pure: packets in, decisions and events out.

The same rules are held equal to the SQL views on generated matches in
tests/integration/test_market_rules.py; here each rule is pinned by a small hand-made case."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from ingest.feed.vocabulary import (
    BREAK_ENDED,
    CANCELLED,
    CONFIRMED,
    DELETED,
    FOUL,
    FRAME_ENDED,
    FRAME_STARTED,
    LINEUPS,
    PENDING,
    RESTORED,
    STATUS_UPDATED,
    UPDATED,
)
from ingest.settlement.markets import (
    OPEN,
    VOID,
    Decision,
    Event,
    Match,
    Packet,
    changes,
    replay,
)

HOME, AWAY = "team-h", "team-a"


def settled(outcome: str, certainty: str = "confirmed") -> Decision:
    return Decision("settled", outcome, certainty)


@dataclass
class Play:
    """Packets of one fixture, numbered 1, 2, 3, ... (a Lineups first, unless told otherwise)."""

    packets: list[Packet] = field(default_factory=list)
    period: int = 0

    def add(self, type_id: int | None, *, action: str | None = None, send: int = CONFIRMED,
            team: str | None = None, finished: bool = False, **fields: Any) -> str:  # fmt: skip
        seq = len(self.packets) + 1
        action_id = action or f"a{seq}"
        fields.setdefault("period", self.period)
        self.packets.append(Packet(seq=seq, action_id=action_id, type_id=type_id,
                                   send_type_id=send, finished=finished, team_id=team,
                                   **{"side": None, **fields}))  # fmt: skip
        return action_id

    def again(self, action: str, send: int, **changes: Any) -> None:
        """A correction: the action's latest packet again, with a new send type (and changes)."""
        latest = next(p for p in reversed(self.packets) if p.action_id == action)
        fields = {k: getattr(latest, k) for k in ("type_id", "period", "metadata", "lineup")}
        fields.update(changes)
        team = fields.pop("team", latest.team_id)
        self.add(fields.pop("type_id"), action=action, send=send, team=team, **fields)

    def lineups(self, home: str = HOME, away: str = AWAY, **kw: Any) -> str:
        return self.add(LINEUPS, lineup=(home, away), **kw)

    def frame(self, n: int) -> str:
        self.period = n
        return self.add(FRAME_STARTED, team=HOME)

    def frame_end(self, team: str | None, home: Any = 60, away: Any = 20, **kw: Any) -> str:
        meta = {"homePoints": home, "awayPoints": away}
        return self.add(FRAME_ENDED, team=team, metadata=meta, **kw)

    def break_end(self, team: str, score: Any, **kw: Any) -> str:
        return self.add(BREAK_ENDED, team=team, metadata={"breakScore": score}, **kw)

    def status(self, collection: str, *, finished: bool = False) -> str:
        meta = {"collectionStatus": collection}
        return self.add(STATUS_UPDATED, metadata=meta, finished=finished)

    def end(self, **kw: Any) -> str:
        return self.add(5, team=HOME, finished=True, **kw)  # Match Ended, the finished packet

    def decisions(self) -> dict[str, Decision]:
        match = Match()
        for packet in self.packets:
            match.apply(packet)
        return match.decisions()


def play(*frames: str) -> Play:
    """A match whose frames are won by these teams (each with a break of 50 by the winner)."""
    p = Play()
    p.lineups()
    for n, winner in enumerate(frames, 1):
        p.frame(n)
        p.break_end(winner, 50)
        p.frame_end(winner)
    return p


# -- one decision at a time --------------------------------------------------------------------


def test_nothing_is_decided_before_the_first_packet_and_markets_open_with_it() -> None:
    assert Match().decisions()["match_winner"] == OPEN
    assert Match().markets() == {}
    p = play("team-h")
    match = Match()
    for packet in p.packets:
        match.apply(packet)
    assert match.markets() == {
        "match_winner": 1, "correct_score": 1, "century_in_match": 1, "maximum_in_match": 1,
        "highest_break_side": 1, "frame_winner:1": 2,
    }  # fmt: skip


def test_a_frame_is_won_by_the_side_of_its_frame_end_in_effect() -> None:
    p = play(HOME, AWAY)
    d = p.decisions()
    assert (d["frame_winner:1"], d["frame_winner:2"]) == (settled("home"), settled("away"))
    assert d["match_winner"] == OPEN  # no finished packet yet
    assert d["correct_score"] == OPEN and d["highest_break_side"] == OPEN


@pytest.mark.parametrize(
    ("team", "home", "away", "winner"),
    [
        (None, 70, 12, "home"),  # no team: the points decide
        (None, "12", "70", "away"),  # numbers as strings count
        (None, 40, 40, None),  # level: undecided
        (None, 40, None, None),  # a side's points missing: undecided
        (None, 7.0, 3, None),  # not an integer
        ("unknown-team", 10, 70, "away"),  # a team the Lineups do not name: the points
        (AWAY, 70, 12, "away"),  # the side wins over the points
    ],
)
def test_a_frame_end_without_a_known_side_is_decided_by_its_points(
    team: str | None, home: Any, away: Any, winner: str | None
) -> None:
    p = Play()
    p.lineups()
    p.frame(1)
    p.frame_end(team, home, away)
    expected = settled(winner) if winner else OPEN
    assert p.decisions()["frame_winner:1"] == expected


def test_a_cancelled_frame_end_undecides_and_a_restored_one_decides_again() -> None:
    p = play()
    p.frame(1)
    ended = p.frame_end(HOME)
    p.again(ended, CANCELLED)
    assert p.decisions()["frame_winner:1"] == OPEN
    p.again(ended, RESTORED)
    assert p.decisions()["frame_winner:1"] == settled("home")
    p.again(ended, DELETED)
    assert p.decisions()["frame_winner:1"] == OPEN


def test_a_frame_end_updated_to_another_type_no_longer_decides() -> None:
    p = play()
    p.frame(1)
    ended = p.frame_end(HOME)
    p.again(ended, UPDATED, type_id=FOUL)
    assert p.decisions()["frame_winner:1"] == OPEN


def test_a_pending_frame_end_is_provisional_and_the_latest_frame_end_decides() -> None:
    p = play()
    p.frame(1)
    first = p.frame_end(HOME, send=PENDING)
    assert p.decisions()["frame_winner:1"] == settled("home", "provisional")
    p.again(first, CONFIRMED)
    assert p.decisions()["frame_winner:1"] == settled("home")
    p.frame_end(AWAY, 10, 70)  # a second Frame Ended action for the same frame: the later wins
    assert p.decisions()["frame_winner:1"] == settled("away")


def test_a_century_is_yes_at_once_and_provisional_while_every_such_break_is_pending() -> None:
    p = play()
    p.frame(1)
    first = p.break_end(HOME, 104, send=PENDING)
    d = p.decisions()
    assert d["century_in_match"] == settled("yes", "provisional")
    assert d["maximum_in_match"] == OPEN
    p.break_end(AWAY, "147")  # a confirmed maximum (a century too)
    d = p.decisions()
    assert d["century_in_match"] == settled("yes") and d["maximum_in_match"] == settled("yes")
    p.again(first, UPDATED, metadata={"breakScore": 96})
    assert p.decisions()["century_in_match"] == settled("yes")  # the 147 still is one


def test_no_century_is_no_only_once_the_match_has_ended() -> None:
    p = play(HOME)
    assert p.decisions()["century_in_match"] == OPEN
    p.end()
    d = p.decisions()
    assert d["century_in_match"] == settled("no") and d["maximum_in_match"] == settled("no")
    p2 = play(HOME)
    p2.end(send=PENDING)  # the ending packet Pending: everything it decides is provisional
    assert p2.decisions()["century_in_match"] == settled("no", "provisional")
    assert p2.decisions()["match_winner"] == settled("home", "provisional")


def test_the_end_decides_winner_score_and_highest_break_side() -> None:
    p = play(HOME, AWAY, AWAY)
    p.end()
    d = p.decisions()
    assert d["match_winner"] == settled("away")
    assert d["correct_score"] == settled("1-2")
    assert d["highest_break_side"] == settled("home")  # three 50s: the first made wins the tie


def test_a_pending_frame_end_makes_the_score_provisional() -> None:
    p = play(HOME)
    p.frame(2)
    p.frame_end(HOME, send=PENDING)
    p.end()
    d = p.decisions()
    assert d["correct_score"] == settled("2-0", "provisional")
    assert d["match_winner"] == settled("home", "provisional")


def test_the_highest_break_side_tie_goes_to_the_break_made_first_even_if_corrected_later() -> None:
    p = play()
    p.frame(1)
    first = p.break_end(AWAY, 80)
    p.break_end(HOME, 80)
    p.again(first, CONFIRMED)  # a later packet of the first break: still made first
    p.break_end(HOME, "not a number")  # no score: not a break for this market
    p.end()
    assert p.decisions()["highest_break_side"] == settled("away")


def test_a_match_that_ends_level_or_without_breaks_voids_those_markets() -> None:
    p = play(HOME, AWAY)
    p.end()
    d = p.decisions()
    assert d["match_winner"] == VOID and d["correct_score"] == settled("1-1")
    empty = Play()
    empty.lineups()
    empty.frame(1)
    empty.frame_end(HOME)
    empty.end()
    assert empty.decisions()["highest_break_side"] == VOID


def test_an_ended_match_voids_a_frame_left_undecided() -> None:
    p = play(HOME)
    p.frame(2)  # started, never ended
    p.end()
    assert p.decisions()["frame_winner:2"] == VOID


def test_a_drop_voids_what_is_not_settled_and_a_restore_reopens_it() -> None:
    p = play(HOME)
    p.frame(2)
    p.break_end(AWAY, 120)
    p.status("CollectionSuspended")
    p.status("CollectionDropped", finished=True)
    d = p.decisions()
    assert d["frame_winner:1"] == settled("home") and d["century_in_match"] == settled("yes")
    assert d["frame_winner:2"] == VOID and d["match_winner"] == VOID
    assert d["correct_score"] == VOID and d["maximum_in_match"] == VOID
    p.status("CollectingLive")
    d = p.decisions()
    assert d["frame_winner:2"] == OPEN and d["match_winner"] == OPEN
    p.frame_end(AWAY, 20, 120)
    p.end()
    d = p.decisions()
    assert d["match_winner"] == VOID and d["correct_score"] == settled("1-1")  # ended, level


def test_a_drop_read_from_the_summary_of_a_finished_packet() -> None:
    p = play(HOME)
    p.add(22, finished=True, summary_collection="CollectionDropped")  # no metadata status
    assert p.decisions()["match_winner"] == VOID


def test_sides_are_the_lineups_in_effect_now_else_the_stored_side() -> None:
    p = Play()
    p.frame(1)
    p.add(FRAME_ENDED, team=HOME, metadata={})  # before any Lineups, no points: undecided
    assert p.decisions()["frame_winner:1"] == OPEN
    lineups = p.lineups()
    assert p.decisions()["frame_winner:1"] == settled("home")  # the Lineups name the team now
    p.again(lineups, UPDATED, lineup=(AWAY, HOME))
    assert p.decisions()["frame_winner:1"] == settled("away")
    p.again(lineups, CANCELLED)  # no Lineups in effect: the side stored with the packet
    assert p.decisions()["frame_winner:1"] == OPEN
    stored = Play()
    stored.frame(1)
    stored.add(FRAME_ENDED, team=HOME, metadata={}, side="home")
    assert stored.decisions()["frame_winner:1"] == settled("home")


# -- events ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "kinds"),
    [
        (OPEN, OPEN, []),
        (OPEN, settled("home"), [("settle", "home")]),
        (settled("home"), settled("home"), []),
        (settled("home", "provisional"), settled("home"), [("settle", "home")]),
        (settled("home"), settled("away"), [("settle", "away")]),
        (settled("home"), OPEN, [("rollback", None)]),
        (settled("home"), VOID, [("rollback", None), ("void", None)]),
        (OPEN, VOID, [("void", None)]),
        (VOID, OPEN, [("rollback_void", None)]),
        (VOID, settled("away"), [("rollback_void", None), ("settle", "away")]),
        (VOID, VOID, []),
    ],
)
def test_the_events_between_two_states(
    before: Decision, after: Decision, kinds: list[tuple[str, str | None]]
) -> None:
    events = list(changes(before, after, "m", 9))
    assert [(e.kind, e.outcome) for e in events] == kinds
    assert all(e.market == "m" and e.decided_by_seq == 9 for e in events)
    assert all(e.certainty == (after.certainty if e.kind == "settle" else None) for e in events)


def test_replay_writes_only_what_follows_the_checkpoint_and_the_same_log_in_pieces() -> None:
    p = play(HOME, AWAY)
    p.frame(3)
    ended = p.frame_end(HOME)
    p.again(ended, CANCELLED)
    p.break_end(AWAY, 147)
    p.again(ended, RESTORED)
    p.end()
    whole = replay(p.packets, 0)
    assert whole.ended and whole.decisions["match_winner"] == settled("home")
    assert whole.markets["frame_winner:3"] == 8
    for cut in range(len(p.packets) + 1):  # a pass to the cut, then one over the rest
        first = replay(p.packets[:cut], 0).events
        rest = replay(p.packets, cut).events
        assert first + rest == whole.events
    frame_3 = [(e.kind, e.decided_by_seq) for e in whole.events if e.market == "frame_winner:3"]
    assert frame_3 == [("settle", 9), ("rollback", 10), ("settle", 12)]
    at_end = [e for e in whole.events if e.decided_by_seq == len(p.packets)]
    assert [e.market for e in at_end] == sorted(e.market for e in at_end)  # in market order
    assert Event("maximum_in_match", "settle", 11, "yes", "confirmed") in whole.events
