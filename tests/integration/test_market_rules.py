"""The market rules live twice, held equal here: in SQL (the views of migration 0003:
``frame_results``, ``match_results``, ``breaks``, ``action_states``) and in Python
(``ingest.settlement.markets.Match``, which the settler folds). On 240 generated matches, with
corrections to every action that decides a market, Lineups swapped, drops and matches cut off in
play, every market's outcome the Python rules decide must be what the views say.

Each match is stored through the real write path; the Python rules read the packets as the
settler does (``SettlementStore.packets``); the views are read in a few batched queries.

Known differences, left out of the corrections below (see the rule tests in
tests/unit/test_markets.py): a Frame Ended that names no side and lacks a side's points (the
views then count the frame's pots and fouls for that side; settlement leaves the frame open), and
a collection restored after a drop (``match_results`` calls the match dropped for good;
settlement reopens its markets, as docs/markets.md says).
"""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from ingest.db.settlement import SettlementStore
from ingest.db.store import Store
from ingest.feed.packet import Action, classify
from ingest.feed.vocabulary import (
    BREAK_ENDED,
    CANCELLED,
    CONFIRMED,
    FOUL,
    FRAME_ENDED,
    LINEUPS,
    PENDING,
    RESTORED,
    SEND_TYPES,
    STATUS_UPDATED,
    UPDATED,
)
from ingest.settlement.markets import OPEN, VOID, Decision, Match
from ingest.simulator.generator import MatchSpec, generate_match
from tests.integration.test_views import NOW

MATCHES = 240
Packets = list[dict[str, Any]]


def fa(packet: dict[str, Any]) -> dict[str, Any]:
    return packet["fixtureAction"]  # type: ignore[no-any-return]


def again(packet: dict[str, Any], send: int, **changes: Any) -> dict[str, Any]:
    """A correction of the packet's action: a copy with a new send type (and changes)."""
    new = copy.deepcopy(packet)
    fa(new).update(changes, sendType=SEND_TYPES[send], sendTypeId=send)
    return new


def status(after: dict[str, Any], collection: str, *, finished: bool) -> dict[str, Any]:
    packet = copy.deepcopy(after)
    packet["finished"] = finished
    fa(packet).update(actionId=str(uuid.uuid4()), fixtureActionType="Status Updated",
                      fixtureActionTypeId=STATUS_UPDATED, sendType="Confirmed",
                      sendTypeId=CONFIRMED, metadata={"collectionStatus": collection})  # fmt: skip
    fa(packet).pop("team", None)
    fa(packet).pop("player", None)
    packet["fixtureSummary"] = {**packet["fixtureSummary"], "collectionStatus": collection,
                                "finished": finished}  # fmt: skip
    return packet


class Corrupter:
    """Corrections of the actions that decide markets, drawn at random (seeded)."""

    def __init__(self, packets: Packets, rng: random.Random, teams: dict[str, Any]) -> None:
        self.packets, self.rng, self.teams = packets, rng, teams
        self.other = {teams["home"]["id"]: teams["away"], teams["away"]["id"]: teams["home"]}

    def of_type(self, type_id: int) -> int | None:
        found = [i for i, p in enumerate(self.packets) if fa(p)["fixtureActionTypeId"] == type_id]
        return self.rng.choice(found) if found else None

    def later(self, i: int, packet: dict[str, Any]) -> int:
        """Insert ``packet`` somewhere after position ``i``; its position."""
        j = self.rng.randint(i + 1, len(self.packets))
        self.packets.insert(j, packet)
        return j

    def frame_end(self) -> None:
        i = self.of_type(FRAME_ENDED)
        if i is None:
            return
        ended = self.packets[i]
        kind = self.rng.randrange(4)
        if kind == 0:  # sent Pending, maybe Confirmed later
            fa(ended).update(sendType="Pending", sendTypeId=PENDING)
            if self.rng.random() < 0.4:
                self.later(i, again(ended, CONFIRMED))
        elif kind == 1:  # Cancelled, maybe Restored later
            j = self.later(i, again(ended, CANCELLED))
            if self.rng.random() < 0.5:
                self.later(j, again(ended, RESTORED))
        elif kind == 2:  # Updated: the other player won it
            meta = fa(ended).get("metadata") or {}
            team = fa(ended).get("team")
            flipped = {"homePoints": meta.get("awayPoints"), "awayPoints": meta.get("homePoints")}
            if team is not None:
                self.later(i, again(ended, UPDATED, team=self.other[team["id"]],
                                    metadata=flipped))  # fmt: skip
        else:  # Updated without a team: its points decide
            new = again(ended, UPDATED)
            fa(new).pop("team", None)
            fa(new).pop("player", None)
            self.later(i, new)

    def break_end(self) -> None:
        i = self.of_type(BREAK_ENDED)
        if i is None:
            return
        ended = self.packets[i]
        kind = self.rng.randrange(5)
        if kind == 0:  # a new score: around a century, a maximum, or far lower
            score = self.rng.choice([self.rng.randint(90, 146), 100, 147, 12])
            meta = {**(fa(ended).get("metadata") or {}), "breakScore": score}
            self.later(i, again(ended, UPDATED, metadata=meta))
        elif kind == 1:
            j = self.later(i, again(ended, CANCELLED))
            if self.rng.random() < 0.5:
                self.later(j, again(ended, RESTORED))
        elif kind == 2:
            fa(ended).update(sendType="Pending", sendTypeId=PENDING)
            if self.rng.random() < 0.4:
                self.later(i, again(ended, CONFIRMED))
        elif kind == 3:  # Updated to another type: no longer a break
            self.later(i, again(ended, UPDATED, fixtureActionTypeId=FOUL,
                                fixtureActionType="Foul"))  # fmt: skip
        else:  # a break of 100+ by the other player, later
            new = again(ended, CONFIRMED, actionId=str(uuid.uuid4()),
                        team=self.other[fa(ended)["team"]["id"]])  # fmt: skip
            fa(new)["metadata"] = {**(fa(new).get("metadata") or {}),
                                   "breakScore": self.rng.randint(100, 147)}  # fmt: skip
            self.later(i, new)

    def tie(self) -> None:
        """The match's highest break equalled later by the other player: the first one wins."""
        ends = [i for i, p in enumerate(self.packets)
                if fa(p)["fixtureActionTypeId"] == BREAK_ENDED and fa(p).get("team")]  # fmt: skip
        if not ends:
            return
        i = max(ends, key=lambda i: fa(self.packets[i])["metadata"]["breakScore"])
        best = self.packets[i]
        self.later(i, again(best, CONFIRMED, actionId=str(uuid.uuid4()),
                            team=self.other[fa(best)["team"]["id"]]))  # fmt: skip

    def lineups(self) -> None:
        i = self.of_type(LINEUPS)
        if i is None:
            return
        original = self.packets[i]
        meta = fa(original)["metadata"]
        swapped = {**meta, "home": meta["away"], "away": meta["home"]}
        if self.rng.random() < 0.5:  # the Lineups corrected: home and away swapped
            self.later(i, again(original, UPDATED, metadata=swapped))
        else:  # a second Lineups action, swapped, maybe Cancelled later
            new = again(original, CONFIRMED, actionId=str(uuid.uuid4()), metadata=swapped)
            j = self.later(i, new)
            if self.rng.random() < 0.5:
                self.later(j, again(new, CANCELLED))

    def left_pending(self) -> None:
        """A frame's end or a break still Pending when the packets stop."""
        i = self.of_type(self.rng.choice([FRAME_ENDED, BREAK_ENDED]))
        if i is not None:
            fa(self.packets[i]).update(sendType="Pending", sendTypeId=PENDING)

    def drop(self) -> None:
        """Suspended then Dropped (finished) somewhere in play; nothing after it."""
        i = self.rng.randrange(3, len(self.packets))
        del self.packets[i:]
        last = self.packets[-1]
        self.packets += [status(last, "CollectionSuspended", finished=False),
                         status(last, "CollectionDropped", finished=True)]  # fmt: skip

    def cut(self) -> None:
        """Cut off in play (or anywhere: before the first frame, after the end)."""
        del self.packets[self.rng.randrange(1, len(self.packets) + 1) :]


def corrupted(seed: int) -> tuple[uuid.UUID, Packets]:
    rng = random.Random(seed)
    best_of = rng.choice([1, 3, 3, 5, 7])
    corrections = tuple(n for n in range(1, best_of + 1) if rng.random() < 0.1)
    match = generate_match(MatchSpec(seed=seed, best_of=best_of, frame_end_corrections=corrections))
    packets = match.packets  # the match's own: nothing else holds them
    teams = {side: {"id": match.truth[side]["team_id"], "name": match.truth[side]["name"]}
             for side in ("home", "away")}  # fmt: skip
    corrupter = Corrupter(packets, rng, teams)
    for _ in range(rng.randint(0, 6)):
        rng.choice([corrupter.frame_end, corrupter.frame_end, corrupter.break_end,
                    corrupter.break_end, corrupter.tie, corrupter.lineups])()  # fmt: skip
    if rng.random() < 0.15:
        corrupter.left_pending()
    ending = rng.random()
    if ending < 0.15:
        corrupter.drop()
    elif ending < 0.45:
        corrupter.cut()
    for seq, packet in enumerate(packets, 1):
        fa(packet).update(fixtureSeqNum=seq, timelineSequence=float(seq))
    return match.fixture_id, packets


def parse(packets: Packets) -> list[Action]:
    """The packets as the worker sees them, numbered 1, 2, 3, ..."""
    actions = []
    for seq, packet in enumerate(packets, 1):
        frame = classify(orjson.dumps(packet), binary=False, position=seq, received_at=NOW)
        assert isinstance(frame, Action)
        actions.append(frame)
    return actions


# -- what each side says -----------------------------------------------------------------------


async def python_rules(store: Store, fixture_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Any]:
    ledger = SettlementStore(store)
    decided = {}
    for fixture_id in fixture_ids:
        match = Match()
        for packet in await ledger.packets(fixture_id):
            match.apply(packet)
        decided[fixture_id] = match.decisions() if match.first_seq is not None else {}
    return decided


async def views(
    sql: asyncpg.Connection, ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[dict[str, Decision], Decision]]:
    """Every market's decision as the views state it, in the Python rules' terms, and what a
    market they do not show is (void once the match has ended or was dropped, else open)."""
    await sql.execute("SET jit = off")
    matches = {r["fixture_id"]: r for r in await sql.fetch(
        "SELECT fixture_id, home_frames, away_frames, winner, status FROM match_results "
        "WHERE fixture_id = ANY($1)", ids)}  # fmt: skip
    frames: dict[uuid.UUID, dict[int, str | None]] = {}
    for r in await sql.fetch(
        "SELECT fixture_id, frame_number, winner FROM frame_results WHERE fixture_id = ANY($1)",
        ids,
    ):
        frames.setdefault(r["fixture_id"], {})[r["frame_number"]] = r["winner"]
    frame_ends = {(r["fixture_id"], r["period"]): r["provisional"] for r in await sql.fetch(
        "SELECT DISTINCT ON (fixture_id, period) fixture_id, period, provisional "
        "FROM action_states WHERE fixture_id = ANY($1) AND action_type_id = 7 AND effective "
        "AND period >= 1 ORDER BY fixture_id, period, seq DESC", ids)}  # fmt: skip
    breaks = {r["fixture_id"]: r for r in await sql.fetch(
        "SELECT fixture_id, bool_or(break_score >= 100) AS century, "
        "bool_and(provisional) FILTER (WHERE break_score >= 100) AS century_provisional, "
        "bool_or(break_score >= 147) AS maximum, "
        "bool_and(provisional) FILTER (WHERE break_score >= 147) AS maximum_provisional "
        "FROM breaks WHERE fixture_id = ANY($1) GROUP BY fixture_id", ids)}  # fmt: skip
    highest = {r["fixture_id"]: r["side"] for r in await sql.fetch(
        "SELECT DISTINCT ON (fixture_id) fixture_id, side FROM breaks "
        "WHERE fixture_id = ANY($1) AND break_score IS NOT NULL "
        "ORDER BY fixture_id, break_score DESC, first_seq", ids)}  # fmt: skip

    said = {}
    for fixture_id in ids:
        m = matches[fixture_id]
        ended, dropped = m["status"] == "completed", m["status"] == "dropped"
        undecided = VOID if ended or dropped else OPEN
        d: dict[str, Decision] = {}
        for n, winner in frames.get(fixture_id, {}).items():
            provisional = frame_ends.get((fixture_id, n))
            d[f"frame_winner:{n}"] = _settled(winner, provisional) if winner else undecided
        b = breaks.get(fixture_id)
        for market, key in (("century_in_match", "century"), ("maximum_in_match", "maximum")):
            if b is not None and b[key]:
                d[market] = _settled("yes", b[f"{key}_provisional"])
            else:
                d[market] = _settled("no", None) if ended else undecided
        if ended:
            d["correct_score"] = _settled(f"{m['home_frames']}-{m['away_frames']}", None)
            d["match_winner"] = _settled(m["winner"], None) if m["winner"] else VOID
            side = highest.get(fixture_id)
            d["highest_break_side"] = _settled(side, None) if side else VOID
        else:
            for market in ("correct_score", "match_winner", "highest_break_side"):
                d[market] = undecided
        said[fixture_id] = (d, undecided)
    return said


def _settled(outcome: str, provisional: bool | None) -> Decision:
    """Settled; certainty None where the views do not state it the way the rules do."""
    certainty = None if provisional is None else ("provisional" if provisional else "confirmed")
    return Decision("settled", outcome, certainty)


def comparable(ours: Decision, theirs: Decision) -> Decision:
    """Ours, with its certainty dropped where the views' is None (not stated)."""
    if theirs.certainty is None and ours.status == "settled":
        return Decision(ours.status, ours.outcome)
    return ours


# -- the test ----------------------------------------------------------------------------------


async def test_the_python_market_rules_decide_what_the_views_say(
    store: Store, sql: asyncpg.Connection
) -> None:
    stored: list[uuid.UUID] = []
    kinds = {"frames": 0, "in play": 0, "dropped": 0, "provisional": 0, "voided frames": 0}
    batch: list[tuple[uuid.UUID, Any]] = []
    for seed in range(1, MATCHES + 1):
        fixture_id, packets = corrupted(seed)
        stored.append(fixture_id)
        batch += [(fixture_id, a) for a in parse(packets)]
        if len(batch) >= 2000:
            await store.write(batch)
            batch = []
    await store.write(batch)

    ours = await python_rules(store, stored)
    theirs = await views(sql, stored)
    differences = []
    for seed, fixture_id in enumerate(stored, 1):
        o, (t, undecided) = ours[fixture_id], theirs[fixture_id]
        # a market only one side shows is undecided on the other: before the first packet the
        # rules see, or a frame the views have no effective action of (only a cancelled start)
        for market in o.keys() | t.keys():
            mine, said = o.get(market, OPEN), t.get(market, undecided)
            if comparable(mine, said) != said:
                differences.append((seed, market, mine, said))
        kinds["frames"] += sum(m.startswith("frame_winner") for m in o)
        kinds["in play"] += o.get("match_winner", OPEN) == OPEN
        kinds["dropped"] += undecided == VOID and t["correct_score"] == VOID
        kinds["provisional"] += any(d.certainty == "provisional" for d in o.values())
        kinds["voided frames"] += sum(m.startswith("frame") and d == VOID for m, d in o.items())
    assert differences == [], f"{len(differences)} differences, first: {differences[:10]}"
    # the matches cover what they are meant to
    assert kinds["in play"] > MATCHES // 5 and kinds["dropped"] > MATCHES // 20
    assert kinds["provisional"] > MATCHES // 20 and kinds["voided frames"] > 10
    outcomes = {(m, d.outcome) for o in ours.values() for m, d in o.items()}
    assert {("maximum_in_match", "yes"), ("century_in_match", "no"), ("match_winner", "away"),
            ("highest_break_side", "home"), ("highest_break_side", "away")} <= outcomes  # fmt: skip
