"""The provider's vocabulary, checked against docs/feed.md and docs/match.md once, here: every
other module and test takes the numbers from ingest.feed.vocabulary."""

from __future__ import annotations

import json

from ingest.feed import vocabulary as v


def test_send_types_are_the_specs() -> None:
    assert v.SEND_TYPES == {
        1: "Pending", 2: "Updated", 3: "Cancelled", 4: "Deleted", 5: "Confirmed", 6: "Restored",
    }  # fmt: skip
    assert (v.PENDING, v.UPDATED, v.CANCELLED, v.DELETED, v.CONFIRMED, v.RESTORED) == (
        1, 2, 3, 4, 5, 6,
    )  # fmt: skip
    assert set(v.VOIDING_SEND_TYPES) == {3, 4}


def test_action_types_are_the_specs() -> None:
    assert v.ACTION_TYPES == {
        1: "Match Conditions", 2: "Team Colours", 3: "Lineups", 4: "Match Started",
        5: "Match Ended", 6: "Frame Started", 7: "Frame Ended", 8: "Striker", 9: "Ball Potted",
        10: "Foul", 11: "Break Ended", 12: "Free Ball", 13: "Re-rack", 14: "Frame Conceded",
        22: "Status Updated",
    }  # fmt: skip


def test_the_home_away_rule() -> None:
    assert v.side_map("t1", "t2") == {"t1": "home", "t2": "away"}
    assert v.side_map(None, "t2") == {"t2": "away"}
    assert [v.lineup_counts(s) for s in (None, 1, 2, 3, 4, 5, 6)] == [
        True, True, True, False, False, True, True,
    ]  # fmt: skip


def test_a_dropped_collection_is_read_where_the_views_read_it() -> None:
    summary = {"fixtureSummary": {"collectionStatus": "CollectionDropped"}, "fixtureAction": {}}
    metadata = {"fixtureAction": {"metadata": {"collectionStatus": "CollectionDropped"}}}
    elsewhere = {"fixtureAction": {"note": "CollectionDropped"}, "fixtureSummary": {}}
    assert v.is_dropped(json.dumps(summary))
    assert v.is_dropped(json.dumps(metadata))
    assert not v.is_dropped(json.dumps(elsewhere))  # the word, not the status
    assert not v.is_dropped("[" * 5000 + "]" * 5000)  # too deep to read: not dropped
