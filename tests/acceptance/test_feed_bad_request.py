"""A feed answering HTTP 400 to the websocket upgrade (README, How ``run`` behaves; docs/feed.md,
How the client reads it): "HTTP 400 is a configuration error (exit 78)", unlike a 404, which
stops that fixture alone, or a 5xx, which is retried.

The real worker (``python -m ingest run``) against the simulator, with one more fixture that a
middleware answers with 400 once the others are streaming: the whole run ends with exit 78, the
400 is not retried, the other fixtures are stopped (closed, saved as ``stopped``, not
reconnected), and the log names the refusal without the token. And a feed that answers 400 to
everything (a plain aiohttp server): exit 78 at once, nothing retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp import web

from ingest.simulator.recording import Recording
from ingest.simulator.server import SimulatorOptions
from tests.acceptance.test_cli import SECRET_TOKEN, cli_env, start_cli
from tests.acceptance.test_connect_rate import Handler, TimedSimulator
from tests.conftest import plain, wait_until
from tests.integration.test_resilience import generated

BAD_REQUEST = "Request is missing required HTTP header 'Accept'"  # the provider's 400


class SimulatorRefusingOne(TimedSimulator):
    """The simulator, answering HTTP 400 to every request for ``refused``'s actions, each once
    the other fixtures have an authenticated connection that has sent packets (or after 8 s,
    within the client's 10 s handshake timeout). Notes every request's arrival by fixture."""

    def __init__(
        self, recordings: list[Recording], options: SimulatorOptions, refused: uuid.UUID
    ) -> None:
        super().__init__(recordings, options)
        self.refused = refused
        self.streaming_at_refusal: bool | None = None
        self.refused_at: float | None = None

    def streaming(self) -> bool:
        return all(c.connections >= 1 and c.packets_sent >= 1 for c in self.counters.values())

    def app(self) -> web.Application:
        app = super().app()

        @web.middleware
        async def refuse(request: web.Request, handler: Handler) -> web.StreamResponse:
            fixture = request.match_info.get("fixture_id")  # its arrival noted already
            actions = fixture is not None and request.path.endswith("/actions")
            if not actions or uuid.UUID(fixture) != self.refused:
                return await handler(request)
            with contextlib.suppress(TimeoutError):  # said by streaming_at_refusal

                async def streaming() -> bool:
                    return self.streaming()

                await wait_until(streaming, timeout=8.0)
            self.streaming_at_refusal = self.streaming()
            self.refused_at = time.monotonic()
            return web.Response(status=400, text=BAD_REQUEST)

        app.middlewares.append(refuse)
        return app


async def ended(proc: asyncio.subprocess.Process, timeout: float) -> tuple[bytes, bytes]:
    """The worker's stdout and stderr once it has exited; killed, and the test failed with its
    log, if it is still running after ``timeout`` seconds."""
    try:
        return await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        _, err = await proc.communicate()
        raise AssertionError(
            f"the worker was still running {timeout:g} s after it started: " + err.decode()[-2000:]
        ) from None


@pytest.fixture
async def refusing_feed() -> AsyncIterator[SimulatorRefusingOne]:
    # paced as recorded: the other fixtures are mid-match, far from finished, when the 400 comes
    recordings = [generated(seed) for seed in (201, 202, 203)]
    options = SimulatorOptions(token=SECRET_TOKEN, heartbeat_interval=1.0)
    sim = SimulatorRefusingOne(recordings, options, refused=uuid.uuid4())
    await sim.start()
    yield sim
    await sim.stop()


async def test_http_400_for_one_fixture_exits_78_and_stops_the_others(
    refusing_feed: SimulatorRefusingOne, database_url: str
) -> None:
    sim = refusing_feed
    others = list(sim.recordings)
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=sim.url,
                  INGEST_TOKEN=SECRET_TOKEN, INGEST_CONNECT_RATE="0")  # fmt: skip
    ids = [str(f) for f in (*others, sim.refused)]
    proc = await start_cli("run", *ids, "--log-level", "DEBUG", env=env)
    out, err = await ended(proc, 30)
    exited = time.monotonic()
    log = err.decode()
    assert proc.returncode == 78, log[-3000:]
    assert sim.streaming_at_refusal, "the other fixtures were not streaming when the 400 came"
    assert sim.refused_at is not None
    assert exited - sim.refused_at < 10, "the run did not end soon after the 400"

    # the refusal is said, with the fixture's URL, at ERROR, and the token is nowhere
    refusal = [line for line in log.splitlines() if "HTTP 400" in line]
    assert refusal, log[-3000:]
    assert any(
        "ERROR" in line
        and "the feed rejected the request (HTTP 400" in line
        and f"/snooker/fixtures/{sim.refused}/actions" in line
        for line in refusal
    ), refusal
    assert SECRET_TOKEN not in log + out.decode()

    # a configuration error is not retried; the others were not reconnected
    attempts = [f for _, f in sim.arrivals]
    assert attempts.count(sim.refused) == 1, attempts
    assert all(attempts.count(f) == 1 for f in others), attempts
    # the others' connections were closed, and each was saved as stopped, not finished
    assert all(sim.counters[f].active == 0 for f in others)
    sql = await asyncpg.connect(plain(database_url))
    try:
        rows = await sql.fetch("SELECT fixture_id, state, finished FROM fixtures")
        stored = await sql.fetchval("SELECT count(*) FROM actions")
    finally:
        await sql.close()
    states = {r["fixture_id"]: (r["state"], r["finished"]) for r in rows}
    assert {f: states.get(f) for f in others} == {f: ("stopped", False) for f in others}
    assert stored >= len(others)  # what the others had received was kept


@pytest.fixture
async def feed_refusing_everything() -> AsyncIterator[tuple[str, list[str]]]:
    """A plain aiohttp server answering 400 to every request: (base URL, paths asked for)."""
    asked: list[str] = []

    async def bad_request(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.Response(status=400, text=BAD_REQUEST)

    app = web.Application()
    app.router.add_get("/{tail:.*}", bad_request)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = int(runner.addresses[0][1])
    yield f"ws://127.0.0.1:{port}", asked
    await runner.cleanup()


async def test_a_feed_answering_400_to_everything_exits_78_without_retrying(
    feed_refusing_everything: tuple[str, list[str]], database_url: str
) -> None:
    url, asked = feed_refusing_everything
    fixtures = [str(uuid.uuid4()) for _ in range(3)]
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=url,
                  INGEST_TOKEN=SECRET_TOKEN)  # fmt: skip
    started = time.monotonic()
    proc = await start_cli("run", *fixtures, env=env)
    out, err = await ended(proc, 30)
    log = err.decode()
    assert proc.returncode == 78, log[-3000:]
    # at the default 4 connections a second the first 400 ends the run: no retry storm
    assert time.monotonic() - started < 15
    assert 1 <= len(asked) <= len(fixtures), asked
    assert len(set(asked)) == len(asked), asked  # no fixture asked for twice
    assert "the feed rejected the request (HTTP 400" in log
    assert SECRET_TOKEN not in log + out.decode()
