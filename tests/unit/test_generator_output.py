"""The generator's output, pinned: the same spec gives the same bytes, release after release.

Tests, benchmarks and recordings depend on it (a seed names a match). A change that alters the
output on purpose updates these digests and says so; a refactoring must leave them alone. The
specs cover 6 and 15 reds, short and long matches, corrections and suspensions off, an explicit
fixture id, players and start, taken-back frame ends, a re-rack and a re-spotted black.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime

import pytest

from ingest.simulator.generator import MatchSpec, generate_match, to_jsonl
from ingest.simulator.sessions import (
    END_OF_SESSION_REASON,
    INTERVAL_REASON,
    interval_after,
    session_length,
)
from ingest.simulator.table import Table

PINNED = [
    (MatchSpec(seed=1), "ba29166986c80d2ba0c5eb3ce7aa36e4d9a3bd424c86d01e71de5c72848a7ba1"),
    (
        MatchSpec(seed=2, best_of=19, reds=6),
        "7aaa02a3d85f94ec8d4d05083e479b2414ec299015224b7064aa9cd0bddb12a5",
    ),
    (
        MatchSpec(seed=3, best_of=9, corrections=False, suspensions=False),
        "a2df48273262fe4d9fe24752b7f4ef1d756f88406a0fa2b56737f5003af95a80",
    ),
    (
        MatchSpec(
            seed=5,
            players=("A B", "C D"),
            fixture_id=uuid.UUID(int=5, version=4),
            start=datetime(2026, 5, 1, 9, 30),
            frame_end_corrections=(1, 3),
        ),
        "a6e2ae44225266c3fe907302a0bcf20cbf25375dc9f489734db7f01fb533f434",
    ),
    (  # a re-rack
        MatchSpec(seed=28, best_of=25),
        "62a4a733e87352b64c657ad5728425922eef75484cdad212e0a2485ad5bf1651",
    ),
    (  # a re-spotted black
        MatchSpec(seed=1020, best_of=19, reds=6),
        "ee0d55654d4f3a5029d5e567eaf3e4d5d1d16f0555fb4cc4cd72f8754c798bed",
    ),
]


@pytest.mark.parametrize(("spec", "digest"), PINNED, ids=lambda v: getattr(v, "seed", ""))
def test_the_output_is_pinned(spec: MatchSpec, digest: str) -> None:
    match = generate_match(spec)
    text = to_jsonl(match.packets) + json.dumps(match.truth)
    assert hashlib.sha256(text.encode()).hexdigest() == digest


def test_the_pinned_specs_cover_the_rare_paths() -> None:
    rerack = generate_match(PINNED[4][0])
    assert any(p["fixtureAction"]["fixtureActionTypeId"] == 13 for p in rerack.packets)
    respot = generate_match(PINNED[5][0])
    assert any(f["respotted_black"] for f in respot.truth["frames"])


def test_sessions() -> None:
    assert [session_length(b) for b in (7, 15, 17, 19, 25, 35)] == [7, 15, 9, 10, 9, 9]
    # best of 19: 10 + 9, the mid-session interval after frames 5 and 15
    assert [i for i in range(1, 19) if interval_after(19, i) == INTERVAL_REASON] == [5, 15]
    assert [i for i in range(1, 19) if interval_after(19, i) == END_OF_SESSION_REASON] == [10]
    assert [interval_after(7, i) for i in (3, 4, 5)] == [None, INTERVAL_REASON, None]
    assert all(interval_after(5, i) is None for i in range(1, 5))


def test_the_table_follows_the_rules() -> None:
    table = Table(6)
    assert table.remaining() == 6 * 8 + 27
    for _ in range(6):  # red, colour, six times
        assert not table.pot_ball_on()
        assert table.colour_due
        assert not table.pot_ball_on()
    assert table.in_colours_phase() and table.remaining() == 27
    cleared = [table.pot_ball_on() for _ in range(2, 8)]
    assert cleared == [False] * 5 + [True]
    table.respot_black()
    assert table.final_black() and table.remaining() == 7
