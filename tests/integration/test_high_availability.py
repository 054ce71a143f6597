"""A failover from a crashed primary to a promoted standby, and PgBouncer in transaction mode.

Both run real servers: a primary and a ``pg_basebackup -R`` streaming standby from the embedded
binaries, and the ``pgbouncer`` binary (skipped, saying how to install it, where it is absent).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from ingest.db.store import Store
from ingest.errors import DatabaseUnavailable
from ingest.feed.client import FeedSource, feed_session
from ingest.feed.packet import Action, classify
from ingest.settings import RunOptions, Secret
from ingest.simulator.recording import Recording
from ingest.worker.supervisor import Worker
from tests.conftest import TOKEN, StartSimulator, plain, wait_until
from tests.integration import pgtools
from tests.integration.test_resilience import assert_stored_exactly, generated


async def _count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM actions"))
    finally:
        await conn.close()


@pytest.fixture
async def primary_and_standby() -> AsyncIterator[tuple[pgtools.Server, pgtools.Server]]:
    primary = await asyncio.to_thread(pgtools.primary)
    standby = None
    try:
        store = Store.connect(primary.url)
        await store.migrate()
        await store.close()
        standby = await asyncio.to_thread(pgtools.standby_of, primary)
        yield primary, standby
    finally:
        for server in (primary, standby):
            if server is not None:
                await asyncio.to_thread(server.remove)


async def test_a_failover_to_a_promoted_standby_loses_nothing(
    start_simulator: StartSimulator,
    primary_and_standby: tuple[pgtools.Server, pgtools.Server],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The primary crashes mid-ingest with commits the standby never received; the standby is
    promoted; the worker finds it through the multi-host URL and fetches the lost packets again.
    """
    primary, standby = primary_and_standby
    recordings = [generated(seed, best_of=3) for seed in (401, 402, 403)]
    seconds = max((r.times[-1] or 0) - (r.times[0] or 0) for r in recordings)
    sim = await start_simulator(recordings, time_scale=seconds / 12, max_gap=0.05)
    url = (
        f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/postgres"
        "?target_session_attrs=read-write&connect_timeout=2"
    )
    store = Store.connect(url)
    # the product's defaults for retrying the database; the feed side is the tests' usual
    options = RunOptions(until_finished=True, connect_rate=0, backoff_initial=0.5)
    caplog.set_level(logging.INFO, logger="ingest")
    try:
        async with feed_session() as session:
            source = FeedSource(session, sim.url, Secret(TOKEN), liveness_timeout=5)
            worker = Worker(source, store, options)
            run = asyncio.create_task(worker.run([r.fixture_id for r in recordings]))

            async def primary_has(rows: int) -> bool:
                return await _count(primary.url) >= rows

            await wait_until(lambda: primary_has(60))
            # the standby falls behind (as under load or a slow network) ...
            await asyncio.to_thread(standby.stop)
            behind = await _count(primary.url)
            await wait_until(lambda: primary_has(behind + 60))
            # ... and the primary dies with commits the standby never received
            await asyncio.to_thread(primary.crash)
            crashed_at = time.monotonic()
            await asyncio.to_thread(standby.start)
            on_standby = await _count(standby.url)
            await asyncio.to_thread(standby.promote)

            async def written_on_new_primary() -> bool:
                return await _count(standby.url) > on_standby

            await wait_until(written_on_new_primary, timeout=45)
            recovered = time.monotonic() - crashed_at
            result = await asyncio.wait_for(run, 60)
    finally:
        await store.close()
    assert all(stats.finished for stats in result.fixtures.values())
    sql = await asyncpg.connect(standby.url)
    try:
        for recording in recordings:  # rows == stream, on the new primary
            await assert_stored_exactly(sql, recording)
    finally:
        await sql.close()
    lost = [r for r in caplog.records if "no longer has seq" in r.getMessage()]
    assert lost, "the standby had fallen behind: some fixture must have been rewound"
    assert worker.refetched > 0
    print(  # the figures README "High availability" quotes (pytest -s shows them)
        f"\nfailover: first batch on the new primary {recovered:.1f} s after the crash; "
        f"{worker.refetched} packets fetched again ({len(lost)} fixtures rewound; "
        f"{behind} rows when the standby stopped)"
    )


async def test_a_read_only_database_is_unavailable_not_bad_data(
    database_url: str, recording: Recording
) -> None:
    """A standby reached by mistake (or default_transaction_read_only) is retried."""
    admin = await asyncpg.connect(plain(database_url))
    name = make_url(database_url).database
    await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    store = Store.connect(database_url)
    fixture = uuid.uuid4()
    try:
        frame = classify(
            recording.lines[0].encode(), binary=False, position=1, received_at=datetime.now(UTC)
        )
        assert isinstance(frame, Action)
        with pytest.raises(DatabaseUnavailable, match="read-only"):
            await store.write([(fixture, frame)])
        big = [(uuid.uuid4(), frame) for _ in range(store.copy_at)]  # the COPY path
        with pytest.raises(DatabaseUnavailable, match="read-only"):
            await store.write(big)
        with pytest.raises(DatabaseUnavailable, match="read-only"):
            await store.register([fixture])
        await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        # the read-only connections were discarded: fresh ones write
        await store.write([(fixture, frame)])
        await store.register([fixture])
    finally:
        await store.close()
        await admin.close()
    check = await asyncpg.connect(plain(database_url))
    try:
        assert await check.fetchval("SELECT count(*) FROM actions") == 1
    finally:
        await check.close()


@pytest.mark.skipif(pgtools.PGBOUNCER is None, reason=pgtools.NO_PGBOUNCER)
async def test_through_pgbouncer_in_transaction_pooling_mode(
    server_url: str, empty_database_url: str, start_simulator: StartSimulator
) -> None:
    """Migrations, leases and the write path (statement and COPY) through PgBouncer
    (transaction pooling, no prepared-statement support), with fewer server connections than
    the worker opens."""
    target = make_url(empty_database_url)
    host = target.host or str(target.query["host"])
    bouncer = await asyncio.to_thread(
        pgtools.start_bouncer, host, target.port or 5432, server_connections=2
    )
    url = bouncer.url(str(target.database)) + "?prepared_statement_cache_size=0"
    recordings = [generated(seed, best_of=1) for seed in (501, 502, 503, 504, 505, 506)]
    sim = await start_simulator(recordings)
    store = Store.connect(url, pool_size=4)
    try:
        await wait_until(lambda: pgtools.accepts(bouncer.port), timeout=10)
        await store.migrate()  # migrations work through the bouncer too
        await store.check_schema()
        await store.register([r.fixture_id for r in recordings])
        options = RunOptions(
            until_finished=True, speed="fast", connect_rate=0, writers=2, batch_size=50,
            backoff_initial=0.01, backoff_max=0.2, db_backoff_max=0.2, registry_poll=0.2,
            worker_id="through-bouncer",
        )  # fmt: skip
        async with feed_session() as session:
            source = FeedSource(session, sim.url, Secret(TOKEN), liveness_timeout=5)
            worker = Worker(source, store, options, leases=store)
            result = await asyncio.wait_for(worker.run([], follow_registry=True), 45)
        assert len(result.fixtures) == len(recordings)
        rows = await store.fixtures([r.fixture_id for r in recordings])
        assert all(row.finished for row in rows)  # stored: what --until-finished waits for
        assert await store.integrity() and all(
            not row["gaps"] and not row["conflicts"] for row in await store.integrity()
        )
        # A batch big enough to be COPYed, then the same batch again: inside the bouncer's
        # transaction the repeat's COPY fails on the key and the statement absorbs it.
        copied, now = generated(507, best_of=3), datetime.now(UTC)
        frames = [classify(line.encode(), binary=False, position=i, received_at=now)
                  for i, line in enumerate(copied.lines, 1)]  # fmt: skip
        batch = [(copied.fixture_id, f) for f in frames if isinstance(f, Action)]
        assert len(batch) >= store.copy_at
        assert (await store.write(batch)).inserted == {copied.fixture_id: len(batch)}
        assert (await store.write(batch)).inserted == {}
        recordings.append(copied)
    finally:
        await store.close()
        await asyncio.to_thread(bouncer.stop)
    sql = await asyncpg.connect(plain(empty_database_url))
    try:
        for recording in recordings:
            await assert_stored_exactly(sql, recording)
    finally:
        await sql.close()
    assert "prepared statement" not in bouncer.log()


@pytest.mark.skipif(pgtools.PGBOUNCER is None, reason=pgtools.NO_PGBOUNCER)
async def test_a_failover_behind_pgbouncer_that_raises_no_error_loses_nothing(
    start_simulator: StartSimulator,
    primary_and_standby: tuple[pgtools.Server, pgtools.Server],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The bouncer is paused (the in-flight transactions end, new ones wait), the primary dies
    with commits the standby lacks, the standby is promoted, the bouncer is pointed at it and
    resumed: the worker's connections to the bouncer never break, no statement fails, and only
    the server identity on each batch's reply tells the worker that the data is another's."""
    primary, standby = primary_and_standby
    bouncer = await asyncio.to_thread(
        pgtools.start_bouncer, "127.0.0.1", primary.port, server_connections=4
    )
    recordings = [generated(seed, best_of=3) for seed in (411, 412, 413)]
    seconds = max((r.times[-1] or 0) - (r.times[0] or 0) for r in recordings)
    sim = await start_simulator(recordings, time_scale=seconds / 12, max_gap=0.05)
    store = Store.connect(bouncer.url("postgres") + "?prepared_statement_cache_size=0")
    options = RunOptions(until_finished=True, connect_rate=0, backoff_initial=0.5)
    caplog.set_level(logging.INFO, logger="ingest")
    try:
        await wait_until(lambda: pgtools.accepts(bouncer.port), timeout=10)
        async with feed_session() as session:
            source = FeedSource(session, sim.url, Secret(TOKEN), liveness_timeout=5)
            worker = Worker(source, store, options)
            run = asyncio.create_task(worker.run([r.fixture_id for r in recordings]))

            async def primary_has(rows: int) -> bool:
                return await _count(primary.url) >= rows

            await wait_until(lambda: primary_has(60))
            await asyncio.to_thread(standby.stop)  # the standby falls behind ...
            behind = await _count(primary.url)
            await wait_until(lambda: primary_has(behind + 60))
            await bouncer.admin("PAUSE")  # ... a switchover: no transaction is cut
            await asyncio.to_thread(primary.crash)  # commits the standby never received
            await asyncio.to_thread(standby.start)
            await asyncio.to_thread(standby.promote)
            bouncer.point_at("127.0.0.1", standby.port)
            await bouncer.admin("RELOAD")
            await bouncer.admin("RECONNECT")
            await bouncer.admin("RESUME")
            result = await asyncio.wait_for(run, 60)
    finally:
        await store.close()
        await asyncio.to_thread(bouncer.stop)
    assert all(stats.finished for stats in result.fixtures.values())
    failures = [r for r in caplog.records if "database unavailable" in r.getMessage()
                and "another database server" not in r.getMessage()]  # fmt: skip
    assert not failures, [r.getMessage() for r in failures]  # no error reached the worker
    assert any("another database server answers" in r.getMessage() for r in caplog.records)
    assert worker.refetched > 0  # the lost commits were fetched again ...
    sql = await asyncpg.connect(standby.url)
    try:
        for recording in recordings:  # ... and rows == stream on the new primary
            await assert_stored_exactly(sql, recording)
    finally:
        await sql.close()
