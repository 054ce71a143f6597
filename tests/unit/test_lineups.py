"""The home/away rule, written once in ingest.feed.vocabulary (the write path and settlement
use it; tests/integration/test_store.py holds it to the fixture_lineups view)."""

from __future__ import annotations

import itertools

from ingest.feed.vocabulary import (
    CANCELLED,
    CONFIRMED,
    DELETED,
    FRAME_ENDED,
    LINEUPS,
    PENDING,
    RESTORED,
    UPDATED,
    LineupPacket,
    Lineups,
    action_key,
    lineup_in_effect,
)

ONE, TWO, THREE = "t1", "t2", "t3"


def fed(*packets: tuple[str, LineupPacket]) -> Lineups:
    lineups = Lineups()
    for key, packet in packets:
        lineups.see(key, packet)
    return lineups


def test_the_lineups_sent_last_is_in_effect_in_whatever_order_packets_come() -> None:
    packets = [
        ("a", LineupPacket(1, ONE, TWO, CONFIRMED)),
        ("b", LineupPacket(5, TWO, ONE, CONFIRMED)),
        ("a", LineupPacket(3, ONE, THREE, UPDATED)),  # a correction of the first, before b
    ]
    for order in itertools.permutations(packets):
        lineups = fed(*order)
        assert lineups.in_effect == LineupPacket(5, TWO, ONE, CONFIRMED)
        assert lineups.sides == {TWO: "home", ONE: "away"}
        assert lineups.actions["a"].seq == 3  # each action in its latest packet


def test_a_cancelled_or_deleted_lineups_gives_way_to_the_one_before() -> None:
    for voiding in (CANCELLED, DELETED):
        lineups = fed(
            ("a", LineupPacket(1, ONE, TWO, CONFIRMED)),
            ("b", LineupPacket(2, TWO, ONE, PENDING)),
            ("b", LineupPacket(3, TWO, ONE, voiding)),
        )
        assert lineups.sides == {ONE: "home", TWO: "away"}
        lineups.see("b", LineupPacket(4, TWO, ONE, RESTORED))
        assert lineups.sides == {TWO: "home", ONE: "away"}


def test_a_lineups_updated_to_another_type_no_longer_counts() -> None:
    lineups = fed(("a", LineupPacket(1, ONE, TWO, CONFIRMED)), ("b", LineupPacket(2, TWO, ONE, 5)))
    assert lineups.concerns(FRAME_ENDED, "b") and not lineups.concerns(FRAME_ENDED, "c")
    assert lineups.concerns(LINEUPS, None)
    lineups.see("b", LineupPacket(3, None, None, UPDATED, FRAME_ENDED))
    assert lineups.in_effect == LineupPacket(1, ONE, TWO, CONFIRMED)


def test_no_lineups_no_sides_and_a_team_it_does_not_name_keeps_its_stored_side() -> None:
    lineups = Lineups()
    assert lineups.in_effect is None and lineups.sides == {}
    assert lineups.side(ONE) is None and lineups.side(ONE, "away") == "away"
    lineups.see("a", LineupPacket(1, ONE, None, CONFIRMED))  # only a home team named
    assert lineups.side(ONE, "away") == "home"  # the Lineups in effect wins over the stored side
    assert lineups.side(TWO) is None and lineups.side(TWO, "away") == "away"
    assert lineups.side(None, "home") == "home"
    assert lineups.side(TWO, "sideways") is None  # only home and away are sides


def test_a_packet_without_action_id_is_an_action_of_its_own() -> None:
    assert action_key(None, 7) == "seq:7" != action_key(None, 8)
    assert action_key("abc", 7) == "abc"
    lineups = fed(
        (action_key(None, 1), LineupPacket(1, ONE, TWO, CONFIRMED)),
        (action_key(None, 2), LineupPacket(2, TWO, ONE, CANCELLED)),
    )
    assert lineups.sides == {ONE: "home", TWO: "away"}  # the second is not a correction of it


def test_lineup_in_effect_over_latest_packets() -> None:
    assert lineup_in_effect([]) is None
    assert lineup_in_effect([LineupPacket(1, ONE, TWO, CANCELLED)]) is None
    assert lineup_in_effect([LineupPacket(1, ONE, TWO, None)]) == LineupPacket(1, ONE, TWO, None)
