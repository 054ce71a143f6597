"""``--async-commit``: the write path's transactions commit with ``synchronous_commit`` off, and
nothing else does; a database crash then loses commits, which the worker fetches again.

What each transaction that stored packets ran with is read by a statement trigger on
``actions`` (it fires for the batch statement and for COPY alike), on a real server, directly
and through a real PgBouncer in transaction pooling mode.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from ingest.db.actions import Writes
from ingest.db.store import Store
from ingest.feed.client import FeedSource, feed_session
from ingest.feed.packet import Action, classify
from ingest.settings import Secret
from ingest.worker.supervisor import Worker
from tests.conftest import TOKEN, StartSimulator, pg_ctl, plain, wait_until
from tests.integration import pgtools
from tests.integration.test_resilience import assert_stored_exactly, fast_options, generated

RECORD_COMMIT_MODE = [
    "CREATE TABLE commit_modes (id bigserial, mode text, packets bigint)",
    """
    CREATE FUNCTION record_commit_mode() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO commit_modes (mode, packets)
        SELECT current_setting('synchronous_commit'), count(*) FROM new_rows;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER record_commit_mode AFTER INSERT ON actions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION record_commit_mode()
    """,
]


async def record_commit_modes(url: str) -> None:
    conn = await asyncpg.connect(plain(url))
    try:
        for statement in RECORD_COMMIT_MODE:
            await conn.execute(statement)
    finally:
        await conn.close()


async def commit_modes(url: str) -> list[tuple[str, int]]:
    conn = await asyncpg.connect(plain(url))
    try:
        rows = await conn.fetch(
            "SELECT mode, packets FROM commit_modes WHERE packets > 0 ORDER BY id"
        )
        return [(row["mode"], row["packets"]) for row in rows]
    finally:
        await conn.close()


def _batches() -> list[list[tuple[uuid.UUID, Action]]]:
    """A one-packet batch, a small batch (the statement) and one big enough for COPY."""
    match, now = generated(611, best_of=3), datetime.now(UTC)
    frames = [classify(line.encode(), binary=False, position=i, received_at=now)
              for i, line in enumerate(match.lines, 1)]  # fmt: skip
    actions = [(match.fixture_id, f) for f in frames if isinstance(f, Action)]
    assert len(actions) >= 4 + Writes.copy_at
    return [actions[:1], actions[1:4], actions[4:]]


async def _write_all(store: Store) -> list[int]:
    sizes = []
    for batch in _batches():
        result = await store.write(batch)
        sizes.append(sum(result.inserted.values()))
    return sizes


@pytest.mark.parametrize("async_commit", [True, False])
async def test_the_write_path_commits_asynchronously_only_when_asked(
    database_url: str, async_commit: bool
) -> None:
    await record_commit_modes(database_url)
    store = Store.connect(database_url, async_commit=async_commit)
    try:
        sizes = await _write_all(store)
        await store.writes.close()  # the kept connection back to the pool ...
        # ... which resets it: whatever uses it next commits as the server is configured
        for _ in range(3):
            [row] = await store.database.fetch("reading", "SHOW synchronous_commit")
            assert row[0] == "on"
    finally:
        await store.close()
    expected = "off" if async_commit else "on"
    assert await commit_modes(database_url) == [(expected, size) for size in sizes]
    assert sizes[2] >= store.copy_at  # the last batch went by COPY (the trigger fired for it)


@pytest.mark.skipif(pgtools.PGBOUNCER is None, reason=pgtools.NO_PGBOUNCER)
async def test_async_commit_through_pgbouncer_in_transaction_pooling_mode(
    database_url: str,
) -> None:
    """Behind a transaction pooler a session lasts one transaction: the setting is made in each
    batch's transaction (SET LOCAL), never left on a server connection another client gets."""
    await record_commit_modes(database_url)
    target = make_url(database_url)
    host = target.host or str(target.query["host"])
    bouncer = await asyncio.to_thread(
        pgtools.start_bouncer, host, target.port or 5432, server_connections=1
    )
    url = bouncer.url(str(target.database)) + "?prepared_statement_cache_size=0"
    store = Store.connect(url, async_commit=True)
    other = Store.connect(url)
    try:
        await wait_until(lambda: pgtools.accepts(bouncer.port), timeout=10)
        sizes = await _write_all(store)
        # one server connection behind the bouncer: the other client gets the same one
        [row] = await other.database.fetch("reading", "SHOW synchronous_commit")
        assert row[0] == "on"
    finally:
        await store.close()
        await other.close()
        await asyncio.to_thread(bouncer.stop)
    assert await commit_modes(database_url) == [("off", size) for size in sizes]


async def test_a_database_crash_under_async_commit_loses_nothing(
    start_simulator: StartSimulator, own_server: tuple[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """The commits the crash takes with it (their WAL still in the server's memory) are found
    missing after the restart and fetched again from the feed: every packet stored once."""
    url, pgdata = own_server
    admin = await asyncpg.connect(plain(url))
    try:  # the WAL writer writes every 10 s: a crash between two writes loses what came since
        await admin.execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
        await admin.execute("ALTER SYSTEM SET wal_writer_flush_after = '64MB'")
        await admin.execute("SELECT pg_reload_conf()")
    finally:
        await admin.close()
    recordings = [generated(seed, best_of=3) for seed in (621, 622)]
    seconds = max((r.times[-1] or 0) - (r.times[0] or 0) for r in recordings)
    sim = await start_simulator(recordings, time_scale=seconds / 6, max_gap=0.05)
    store = Store.connect(url, async_commit=True)
    options = fast_options(speed=None)
    caplog.set_level(logging.WARNING, logger="ingest")
    try:
        async with feed_session() as session:
            source = FeedSource(session, sim.url, Secret(TOKEN), liveness_timeout=5)
            worker = Worker(source, store, options)
            run = asyncio.create_task(worker.run([r.fixture_id for r in recordings]))

            async def stored(rows: int) -> bool:
                conn = await asyncpg.connect(plain(url))
                try:
                    return bool(await conn.fetchval("SELECT count(*) >= $1 FROM actions", rows))
                finally:
                    await conn.close()

            await wait_until(lambda: stored(60))
            await asyncio.to_thread(pg_ctl, pgdata, "stop", mode="immediate")  # a crash
            await asyncio.to_thread(pg_ctl, pgdata, "start")
            result = await asyncio.wait_for(run, 60)
    finally:
        await store.close()
    assert all(stats.finished for stats in result.fixtures.values())
    sql = await asyncpg.connect(plain(url))
    try:
        for recording in recordings:
            await assert_stored_exactly(sql, recording)
    finally:
        await sql.close()
    lost = [r for r in caplog.records if "no longer has seq" in r.getMessage()]
    assert lost and worker.refetched > 0, "the crash took commits with it: fetched again"
