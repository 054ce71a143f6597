"""Stored matches out again: export as JSON lines, and serve them (``feed serve
--from-database``) into a second database, row for row."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import asyncpg
import pytest

from ingest.db.store import Store
from ingest.errors import ConfigError, UnknownFixture
from ingest.export import stored_recordings, write_recordings
from ingest.simulator.recording import Recording
from tests.conftest import StartFeed, plain
from tests.integration.test_ingest import ingest


async def action_rows(url: str) -> list[tuple[object, ...]]:
    """Every column of every stored packet but the times it was received and stored, in key
    order."""
    conn = await asyncpg.connect(plain(url))
    try:
        columns = [
            r["column_name"]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'actions' "
                "AND column_name NOT IN ('received_at', 'stored_at') "
                "ORDER BY ordinal_position"
            )
        ]
        assert "payload" in columns and "side" in columns
        rows = await conn.fetch(
            f"SELECT {', '.join(columns)} FROM actions ORDER BY fixture_id, seq"
        )
        return [tuple(r) for r in rows]
    finally:
        await conn.close()


async def test_stored_matches_replay_into_a_second_database_row_for_row(
    start_feed: StartFeed,
    database_url: str,
    other_database_url: str,
    recording: Recording,
    tmp_path: Path,
) -> None:
    second = Recording.generated(11, best_of=3)
    unfinished = Recording.from_lines(
        Recording.generated(12, best_of=3).lines[:40], fixture_id=uuid.UUID(int=12)
    )
    source = Store.connect(database_url)
    target = Store.connect(other_database_url)
    try:
        feed = await start_feed([recording, second, unfinished])
        await ingest(feed, source, [recording.fixture_id, second.fixture_id])
        # the unfinished match: stored until its feed ran out, then the run stopped
        await ingest(feed, source, [unfinished.fixture_id], max_runtime=1.0)
        assert await source.max_seq(unfinished.fixture_id) == 40

        served = await stored_recordings(source)  # every finished match, none other
        assert {r.fixture_id for r in served} == {recording.fixture_id, second.fixture_id}
        for stored in served:
            original = recording if stored.fixture_id == recording.fixture_id else second
            assert [json.loads(line) for line in stored.lines] == [
                json.loads(line) for line in original.lines
            ]
            assert stored.times == original.times  # pacing: the packets' own timestamps
            assert stored.finished

        # the full protocol from the stored rows: drops mid-stream resume at startPosition
        replay = await start_feed(served, drop_after=29)
        result = await ingest(replay, target, [r.fixture_id for r in served])
        assert result.all_finished
        assert all(s.connects > 1 and s.gaps == 0 for s in result.fixtures.values())
        rows = await action_rows(other_database_url)
        assert rows == [r for r in await action_rows(database_url) if r[0] != unfinished.fixture_id]
        assert len(rows) == len(recording.lines) + len(second.lines)

        # the export is the same packets, one per line, in seq order
        [path] = write_recordings(
            await stored_recordings(source, [second.fixture_id]), str(tmp_path)
        )
        assert Path(path).name == f"{second.fixture_id}.jsonl"
        exported = Recording.load(path)
        assert exported.fixture_id == second.fixture_id
        assert (
            exported.lines == served[[r.fixture_id for r in served].index(second.fixture_id)].lines
        )
    finally:
        await source.close()
        await target.close()


async def test_asking_for_what_is_not_stored_is_a_clear_error(store: Store) -> None:
    with pytest.raises(ConfigError, match="no finished match is stored"):
        await stored_recordings(store)
    missing = uuid.UUID(int=99)
    with pytest.raises(UnknownFixture, match=f"no packets of fixture {missing}"):  # exit 66
        await stored_recordings(store, [missing])


def test_standard_output_takes_one_fixture(recording: Recording) -> None:
    with pytest.raises(ConfigError, match="give a directory"):
        write_recordings([recording, recording], "-")
