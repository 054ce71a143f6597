"""Many workers, one database: leases, failover and discovery through the real CLI."""

from __future__ import annotations

import asyncio
import signal
import time

import asyncpg

from tests.acceptance.test_cli import cli, cli_env, start_cli
from tests.conftest import TOKEN, StartSimulator, plain, wait_until
from tests.integration.test_resilience import assert_stored_exactly, generated

TTL = 2.0


async def test_three_workers_share_sixty_fixtures_and_take_over_from_a_killed_one(
    start_simulator: StartSimulator, database_url: str
) -> None:
    recordings = [generated(seed, best_of=1) for seed in range(300, 360)]
    longest = max((r.times[-1] or 0) - (r.times[0] or 0) for r in recordings)
    # live pacing squeezed so that the longest match takes about 12 s
    sim = await start_simulator(recordings, time_scale=longest / 12, heartbeat_interval=0.2)
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=sim.url, INGEST_TOKEN=TOKEN)
    ids = [str(r.fixture_id) for r in recordings]
    assert (await cli("fixtures", "add", *ids, env=env)).code == 0
    workers = {
        name: await start_cli(
            "run",
            "--all",
            "--until-finished",
            "--lease-ttl",
            str(TTL),
            "--registry-poll",
            "0.3",
            "--connect-rate",
            "0",
            "--worker-id",
            name,
            env=env,
        )
        for name in ("w1", "w2", "w3")
    }
    sql = await asyncpg.connect(plain(database_url))
    try:

        async def owners() -> dict[str, int]:
            rows = await sql.fetch(
                "SELECT owner, count(*) AS n FROM fixtures WHERE owner IS NOT NULL GROUP BY owner"
            )
            return {r["owner"]: r["n"] for r in rows}

        async def spread_evenly() -> bool:
            counts = await owners()
            return len(counts) == 3 and max(counts.values()) - min(counts.values()) <= 3

        await wait_until(spread_evenly, timeout=10)

        victims = [
            r["fixture_id"]
            for r in await sql.fetch(
                "SELECT fixture_id FROM fixtures WHERE owner = 'w1' AND NOT finished"
            )
        ]
        assert victims
        workers["w1"].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()

        async def taken_over() -> bool:
            rows = await sql.fetch(
                "SELECT owner, finished FROM fixtures WHERE fixture_id = ANY($1)", victims
            )
            return all(r["finished"] or r["owner"] in ("w2", "w3") for r in rows)

        await wait_until(taken_over, timeout=15)
        takeover = time.monotonic() - killed_at
        # lease TTL + one renewal, and slack for the 0.3 s registry poll and a loaded machine
        # (three workers, the feed and PostgreSQL on two cores, where 1.5 s was a close call)
        assert takeover <= TTL + TTL / 3 + 2.5, takeover

        for name in ("w2", "w3"):
            _, err = await asyncio.wait_for(workers[name].communicate(), 60)
            assert workers[name].returncode == 0, err.decode()[-2000:]
        for recording in recordings:
            await assert_stored_exactly(sql, recording)
        # one worker at a time per fixture, as far as the feed could see
        assert all(sim.counters[r.fixture_id].max_active == 1 for r in recordings)
        assert await sql.fetchval("SELECT count(*) FROM fixtures WHERE owner IS NOT NULL") == 0
    finally:
        await sql.close()
        for proc in workers.values():
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_discovery_registers_new_fixtures_and_a_running_worker_picks_them_up(
    start_simulator: StartSimulator, database_url: str
) -> None:
    first, second, late = generated(400), generated(401), generated(402)
    sim = await start_simulator([first, second])
    api = sim.url.replace("ws://", "http://")
    env = cli_env(
        INGEST_DATABASE_URL=database_url,
        INGEST_FEED_URL=sim.url,
        INGEST_API_URL=api,
        INGEST_TOKEN=TOKEN,
    )
    found = await cli("fixtures", "discover", env=env)
    assert found.code == 0 and "2 new registered" in found.stdout
    again = await cli("fixtures", "discover", env=env)
    assert "0 new registered" in again.stdout
    refused = await cli("fixtures", "discover", env={**env, "INGEST_TOKEN": "wrong"})
    assert refused.code == 77

    proc = await start_cli(
        "run", "--all", "--speed", "fast", "--discover-every", "0.3", "--registry-poll", "0.3",
        env=env,
    )  # fmt: skip
    sql = await asyncpg.connect(plain(database_url))
    try:

        async def finished(*fixtures: object) -> bool:
            count = await sql.fetchval(
                "SELECT count(*) FROM fixtures WHERE finished AND fixture_id = ANY($1)",
                list(fixtures),
            )
            return bool(count == len(fixtures))

        await wait_until(lambda: finished(first.fixture_id, second.fixture_id))
        sim.add_recording(late)  # a new fixture appears in the provider's list
        await wait_until(lambda: finished(late.fixture_id))
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0
        for recording in (first, second, late):
            await assert_stored_exactly(sql, recording)
        listed = await cli("fixtures", "list", env=env)
        assert str(late.fixture_id) in listed.stdout and "owner" in listed.stdout
    finally:
        await sql.close()
        if proc.returncode is None:
            proc.kill()
