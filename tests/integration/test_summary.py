"""Reconciliation with the provider's fixtureSummary (migration 0008, docs/reconciliation.md).

Packets go into a real PostgreSQL through the store, as the worker writes them; the
``summary_mismatches`` view, ``ingest verify``, ``ingest report`` and the worker's warnings must
then say exactly where the latest packet's summary and our views part ways, and nothing else.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import logging
import random
import re
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from ingest import commands
from ingest.db.store import Store
from ingest.feed.client import FeedSource, feed_session
from ingest.feed.vocabulary import BALL_POTTED, FRAME_ENDED, FRAME_STARTED
from ingest.ops.metrics import Metrics
from ingest.settings import RunOptions, Secret
from ingest.simulator.generator import GeneratedMatch, MatchSpec, generate_match, to_jsonl
from ingest.simulator.recording import Recording
from ingest.worker.supervisor import Worker
from tests.conftest import TOKEN, StartFeed
from tests.integration.test_views import parse

CORRECTIONS = {1, 2, 3, 4, 6}  # Pending, Updated, Cancelled, Deleted, Restored

Packets = list[dict[str, Any]]


async def mismatches(sql: asyncpg.Connection, fixture_id: uuid.UUID) -> list[tuple[Any, ...]]:
    rows = await sql.fetch(
        "SELECT seq, field, ours, provider FROM summary_mismatches WHERE fixture_id = $1 "
        "ORDER BY field",
        fixture_id,
    )
    return [tuple(r) for r in rows]


async def store_packets(
    store: Store, fixture_id: uuid.UUID, packets: Sequence[dict[str, Any]], first: int = 1
) -> None:
    actions = parse(packets, first_position=first)
    await store.write([(fixture_id, a) for a in actions])


def index_of(packets: Packets, type_id: int, period: int) -> int:
    return next(
        i
        for i, p in enumerate(packets)
        if p["fixtureAction"]["fixtureActionTypeId"] == type_id
        and p["fixtureAction"]["period"] == period
    )


# -- generated matches agree at every point ----------------------------------------------------

# every packet of these is checked: several formats, 15 and 6 reds, corrections in most
EVERY_PACKET = [(8, 1, 15), (2, 5, 6), (3, 3, 15), (10, 7, 15), (9, 9, 6), (13, 3, 6)]


def test_the_checked_matches_have_corrections() -> None:
    sends = set()
    for seed, best_of, reds in EVERY_PACKET:
        match = generate_match(MatchSpec(seed=seed, best_of=best_of, reds=reds))
        sends |= {p["fixtureAction"]["sendTypeId"] for p in match.packets}
    assert sends >= CORRECTIONS


@pytest.mark.parametrize(("seed", "best_of", "reds"), EVERY_PACKET)
async def test_a_generated_match_agrees_after_every_packet(
    store: Store, sql: asyncpg.Connection, seed: int, best_of: int, reds: int
) -> None:
    match = generate_match(MatchSpec(seed=seed, best_of=best_of, reds=reds))
    for i, packet in enumerate(match.packets):
        await store_packets(store, match.fixture_id, [packet], first=i + 1)
        assert await mismatches(sql, match.fixture_id) == [], f"after seq {i + 1}"
    assert (await store.fixtures_in_disagreement([match.fixture_id])) == {}


async def test_a_long_match_agrees_around_every_frame_end(
    store: Store, sql: asyncpg.Connection
) -> None:
    """Best of 19 with suspensions and intervals: around each Frame Ended and at random cuts."""
    match = generate_match(MatchSpec(seed=4, best_of=19))
    packets = match.packets
    ends = [i for i, p in enumerate(packets) if p["fixtureAction"]["fixtureActionTypeId"] == 7]
    cuts = {c for i in ends for c in (i, i + 1, i + 2)}  # number of packets stored
    cuts |= set(random.Random(4).sample(range(1, len(packets)), 30)) | {len(packets)}
    stored = 0
    for cut in sorted(c for c in cuts if 0 < c <= len(packets)):
        await store_packets(store, match.fixture_id, packets[stored:cut], first=stored + 1)
        stored = cut
        assert await mismatches(sql, match.fixture_id) == [], f"after seq {cut}"


# -- the lag rule ------------------------------------------------------------------------------


def lagging(packets: Packets, behind: int) -> Packets:
    """The same stream with every summary ``behind`` packets late (the first ones repeat)."""
    out = copy.deepcopy(packets)
    for i, packet in enumerate(out):
        packet["fixtureSummary"] = copy.deepcopy(packets[max(i - behind, 0)]["fixtureSummary"])
    return out


async def test_a_summary_one_packet_behind_never_raises_an_alarm(
    store: Store, sql: asyncpg.Connection
) -> None:
    match = generate_match(MatchSpec(seed=10, best_of=7))
    for i, packet in enumerate(lagging(match.packets, 1)):
        await store_packets(store, match.fixture_id, [packet], first=i + 1)
        assert await mismatches(sql, match.fixture_id) == [], f"after seq {i + 1}"


async def test_a_summary_two_packets_behind_is_flagged(
    store: Store, sql: asyncpg.Connection
) -> None:
    match = generate_match(MatchSpec(seed=10, best_of=7))
    packets = lagging(match.packets, 2)
    end = index_of(packets, FRAME_ENDED, 1)
    await store_packets(store, match.fixture_id, packets[: end + 2])  # one packet after it
    # the summary still shows frame 1 in play, one packet after our Frame Ended: reported
    rows = await mismatches(sql, match.fixture_id)
    fields = {r[1] for r in rows}
    assert {"frame 1 finished", "frame 1 winner"} <= fields
    assert {r[0] for r in rows} == {end + 2}


async def test_a_summary_that_moves_to_another_value_is_flagged_at_once(
    store: Store, sql: asyncpg.Connection
) -> None:
    """The latest packet is the Frame Ended itself, but its summary names the other winner."""
    match = generate_match(MatchSpec(seed=10, best_of=7))
    packets = copy.deepcopy(match.packets)
    end = index_of(packets, FRAME_ENDED, 1)
    summary = packets[end]["fixtureSummary"]
    winner = summary["periods"][0]["winner"]
    loser = "away" if winner == "home" else "home"
    summary["periods"][0]["winner"] = loser
    summary[f"{winner}TeamScore"] -= 1
    summary[f"{loser}TeamScore"] += 1
    await store_packets(store, match.fixture_id, packets[: end + 1])
    # the winner's count has not moved yet (it may be behind), the others moved elsewhere
    assert await mismatches(sql, match.fixture_id) == sorted(
        [
            (end + 1, f"{loser}_frames", "0", "1"),
            (end + 1, "frame 1 winner", winner, loser),
        ],
        key=lambda r: r[1],
    )


# -- mutated streams ---------------------------------------------------------------------------


def claim_an_extra_frame(match: GeneratedMatch) -> tuple[Packets, int, str]:
    """Cut mid frame 2; from frame 1's end on, the summaries claim a finished frame 3 as well."""
    packets = copy.deepcopy(match.packets)
    start = index_of(packets, FRAME_STARTED, 2)
    cut = next(
        i
        for i in range(start + 5, len(packets))
        if packets[i]["fixtureAction"]["fixtureActionTypeId"] == BALL_POTTED
    )
    first_winner = packets[index_of(packets, FRAME_ENDED, 1)]["fixtureAction"]
    for packet in packets[index_of(packets, FRAME_ENDED, 1) : cut + 1]:
        summary = packet["fixtureSummary"]
        summary["homeTeamScore"] += 1
        summary["periods"].append(
            {"periodNumber": 3, "label": "3rd frame", "homeTeamScore": 71,
             "awayTeamScore": 12, "isFinished": True, "winner": "home"}
        )  # fmt: skip
    assert first_winner["period"] == 1
    return packets[: cut + 1], cut + 1, str(packets[cut]["fixtureSummary"]["homeTeamScore"] - 1)


async def test_a_summary_claiming_a_frame_we_do_not_have_is_flagged(
    store: Store, sql: asyncpg.Connection, database_url: str
) -> None:
    match = generate_match(MatchSpec(seed=1, best_of=7))
    packets, seq, ours_home = claim_an_extra_frame(match)
    await store_packets(store, match.fixture_id, packets)
    assert await mismatches(sql, match.fixture_id) == [
        (seq, "frame 3 finished", None, "true"),
        (seq, "frame 3 winner", None, "home"),
        (seq, "home_frames", ours_home, str(int(ours_home) + 1)),
    ]
    out = io.StringIO()
    assert await commands.verify(database_url, match.fixture_id, out) == 1
    text = out.getvalue()
    assert f"3 field(s) disagree with the provider's summary at seq {seq}" in text
    assert "frame 3 finished: ours none, provider true" in text


async def test_actions_with_a_frame_the_summary_does_not_have_are_flagged(
    store: Store, sql: asyncpg.Connection, database_url: str
) -> None:
    match = generate_match(MatchSpec(seed=1, best_of=7))
    packets = copy.deepcopy(match.packets)
    end = index_of(packets, FRAME_ENDED, 2)
    cut = end + 3
    winner = packets[end]["fixtureAction"]
    side = "home" if winner["team"]["id"] == match.truth["home"]["team_id"] else "away"
    frame2 = match.truth["frames"][1]
    assert frame2["winner"] == side
    for packet in packets[end:cut]:  # the summaries forget frame 2 ever happened
        summary = packet["fixtureSummary"]
        summary["periods"] = [p for p in summary["periods"] if p["periodNumber"] != 2]
        summary[f"{side}TeamScore"] -= 1
    await store_packets(store, match.fixture_id, packets[:cut])
    theirs = packets[cut - 1]["fixtureSummary"][f"{side}TeamScore"]
    assert await mismatches(sql, match.fixture_id) == [
        (cut, f"{side}_frames", str(theirs + 1), str(theirs)),
        (cut, "frame 2 finished", "true", None),
        (cut, "frame 2 winner", side, None),
    ]
    out = io.StringIO()
    assert await commands.verify(database_url, None, out) == 1
    assert "frame 2 winner: ours " + side + ", provider none" in out.getvalue()

    # the report shows it too, for people and for scripts
    report = io.StringIO()
    await commands.report(database_url, match.fixture_id, report)
    assert f"Disagrees with the provider's summary at seq {cut}" in report.getvalue()
    as_json = io.StringIO()
    await commands.report(database_url, match.fixture_id, as_json, as_json=True)
    fields = [m["field"] for m in json.loads(as_json.getvalue())["summary_mismatches"]]
    assert fields == [f"{side}_frames", "frame 2 finished", "frame 2 winner"]

    # when a later packet's summary is right again, the disagreement clears
    await store_packets(store, match.fixture_id, match.packets[cut : cut + 1], first=cut + 1)
    assert await mismatches(sql, match.fixture_id) == []
    assert await commands.verify(database_url, match.fixture_id, io.StringIO()) == 0


async def test_a_clean_match_verifies_and_reports_no_disagreement(
    store: Store, sql: asyncpg.Connection, database_url: str
) -> None:
    match = generate_match(MatchSpec(seed=3, best_of=3))
    await store_packets(store, match.fixture_id, match.packets)
    out = io.StringIO()
    assert await commands.verify(database_url, None, out) == 0
    assert "disagree" not in out.getvalue()
    status = io.StringIO()
    await commands.status(database_url, asyncio.Event(), status, once=True, as_json=True)
    [entry] = json.loads(status.getvalue())
    assert entry["summary_mismatches"] == []


async def test_status_shows_a_disagreement(store: Store, database_url: str) -> None:
    match = generate_match(MatchSpec(seed=1, best_of=7))
    packets, _, _ = claim_an_extra_frame(match)
    await store_packets(store, match.fixture_id, packets)
    out = io.StringIO()
    await commands.status(database_url, asyncio.Event(), out, once=True, as_json=True)
    [entry] = json.loads(out.getvalue())
    assert entry["summary_mismatches"] == ["frame 3 finished", "frame 3 winner", "home_frames"]
    table = io.StringIO()
    await commands.status(database_url, asyncio.Event(), table, once=True)
    assert "DISAGREES" in table.getvalue() and "1 disagree" in table.getvalue()


# -- what a summary lacks is not compared ------------------------------------------------------


@pytest.mark.parametrize(
    "summary",
    [
        None,  # no fixtureSummary at all
        {"currentStatus": "Live", "collectionStatus": "CollectionSuspended"},  # the sample's
        {"homeTeamScore": None, "awayTeamScore": "x", "finished": "maybe", "periods": "none"},
        # entries without the fields (an entry without the frame would be a disagreement)
        {"periods": [7, "x", {"periodNumber": 1}, {"periodNumber": 2}, {"periodNumber": "y"}]},
        ["not", "an", "object"],
    ],
)
async def test_fields_a_summary_lacks_are_not_compared(
    store: Store, sql: asyncpg.Connection, summary: Any
) -> None:
    match = generate_match(MatchSpec(seed=10, best_of=7))
    packets = copy.deepcopy(match.packets[: index_of(match.packets, FRAME_ENDED, 2) + 3])
    for packet in packets[-2:]:  # the latest and the one before it
        if summary is None:
            del packet["fixtureSummary"]
        else:
            packet["fixtureSummary"] = summary
    await store_packets(store, match.fixture_id, packets)
    assert await mismatches(sql, match.fixture_id) == []


# -- the worker warns once when it appears and once when it clears -----------------------------


async def test_the_worker_warns_when_a_disagreement_appears_and_clears(
    start_feed: StartFeed, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    match = generate_match(MatchSpec(seed=1, best_of=7))
    packets, seq, _ = claim_an_extra_frame(match)
    # the stream: the mutated packets, then the real rest of the match; the feed pauses after
    # the mutated part, long enough for the worker to look at least once
    stream = packets + match.packets[len(packets) :]
    recording = Recording.from_text(to_jsonl(stream), name="mutated")
    feed = await start_feed([recording], stall_after=len(packets), stall_seconds=1.5)
    metrics = Metrics()
    options = RunOptions(
        until_finished=True, speed="fast", backoff_initial=0.01, connect_rate=0,
        summary_interval=0.05,
    )  # fmt: skip
    seen: list[float] = []

    async def watch_gauge(worker: Worker) -> None:
        while True:
            seen.append(metrics.summary_disagreements._value.get())
            await asyncio.sleep(0.02)

    caplog.set_level(logging.WARNING, logger="ingest.worker.supervisor")
    async with feed_session() as session:
        source = FeedSource(session, feed, Secret(TOKEN), liveness_timeout=5)
        worker = Worker(source, store, options, metrics, reconciler=store)
        watcher = asyncio.create_task(watch_gauge(worker))
        try:
            async with asyncio.timeout(30):
                result = await worker.run([match.fixture_id])
        finally:
            watcher.cancel()
    assert result.all_finished
    lines = [r.getMessage() for r in caplog.records if "fixtureSummary" in r.getMessage()]
    assert len(lines) == 2, lines
    appeared = re.fullmatch(
        f"fixture {match.fixture_id}: the provider's fixtureSummary at seq ([0-9]+) disagrees "
        "with our views: (.*); settlement holds this fixture until they agree",
        lines[0],
    )
    assert appeared is not None, lines[0]
    # seen at the latest packet of some look between frame 1's end and the pause
    assert index_of(stream, FRAME_ENDED, 1) < int(appeared[1]) <= seq
    assert "frame 3 finished ours None provider true" in appeared[2]
    cleared = re.fullmatch(
        f"fixture {match.fixture_id}: the provider's fixtureSummary agrees with our views "
        "again \\(seq ([0-9]+)\\)",
        lines[1],
    )
    assert cleared is not None and seq < int(cleared[1]) <= len(stream), lines[1]
    assert 1.0 in seen and metrics.summary_disagreements._value.get() == 0
    assert worker.disagreeing == set()
