"""``ingest export`` and ``ingest feed serve --from-database``: a stored match out of one
database, through the real commands, into another, row for row."""

from __future__ import annotations

import json
import time

import aiohttp
import asyncpg

from ingest.simulator.recording import Recording
from tests.acceptance.test_cli import cli, cli_env, start_cli
from tests.acceptance.test_ops import free_port
from tests.conftest import TOKEN, StartFeed, plain, wait_until
from tests.integration.test_export import action_rows


async def test_a_stored_match_is_exported_and_replayed_into_a_second_database(
    start_feed: StartFeed,
    database_url: str,
    other_database_url: str,
    recording: Recording,
) -> None:
    fixture = str(recording.fixture_id)
    feed = await start_feed([recording])
    first = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=feed, INGEST_TOKEN=TOKEN)
    assert (await cli("run", fixture, "--until-finished", "--speed", "fast", env=first)).code == 0

    exported = await cli("export", fixture, "--output", "-", env=first)
    assert exported.code == 0, exported.stderr
    lines = exported.stdout.splitlines()
    conn = await asyncpg.connect(plain(database_url))
    try:
        stored = await conn.fetch("SELECT seq, payload::text AS p FROM actions ORDER BY seq")
    finally:
        await conn.close()
    assert lines == [r["p"] for r in stored]  # one packet per line, in seq order
    assert [json.loads(line) for line in lines] == [json.loads(x) for x in recording.lines]

    port = free_port()
    seconds = (recording.times[-1] or 0) - (recording.times[0] or 0)
    scale = str(seconds / 3)  # the match in about 3 s
    server = await start_cli(
        "feed", "serve", "--from-database", "--port", str(port), "--time-scale", scale,
        env=cli_env(INGEST_DATABASE_URL=database_url, INGEST_TOKEN=TOKEN),
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:

            async def listening() -> bool:
                assert server.returncode is None, await server.stderr.read()  # type: ignore[union-attr]
                try:
                    async with http.get(f"http://127.0.0.1:{port}/_control/stats") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(listening)
        second = cli_env(
            INGEST_DATABASE_URL=other_database_url,
            INGEST_FEED_URL=f"ws://127.0.0.1:{port}",
            INGEST_TOKEN=TOKEN,
        )
        # paced (speed normal) by the packets' own timestamps, divided by --time-scale
        started = time.monotonic()
        done = await cli("run", fixture, "--until-finished", env=second, timeout=120)
        assert done.code == 0, done.stderr
        assert time.monotonic() - started >= 2.5  # not all at once: about 3 s of pacing
    finally:
        server.terminate()
        await server.wait()
    assert server.returncode == 0
    assert await action_rows(other_database_url) == await action_rows(database_url)


async def test_serving_from_an_empty_database_says_what_is_missing(database_url: str) -> None:
    done = await cli(
        "feed", "serve", "--from-database", "--port", "0",
        env=cli_env(INGEST_DATABASE_URL=database_url),
    )  # fmt: skip
    assert done.code == 78
    assert "no finished match is stored" in done.stderr
