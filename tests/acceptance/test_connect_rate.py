"""``--connect-rate`` (README, ``ingest run`` options): at most that many connection attempts a
second across all fixtures (default 4), 0 for no limit; judged from the feed's side.

The real worker (``python -m ingest run``) streams several fixtures from the simulator; the
simulator is given one more middleware that notes when each websocket request arrives. The
limiter (``ingest.worker.retry.RateLimiter``) has no burst: the first attempt goes at once and
each later one a full interval (1/R) after the slot of the one before, whichever fixture it is
for. So the k-th attempt after any other arrives about k/R after it.

The tolerance, four fifths of an interval (SLACK), is for when the two processes get to run
(a loaded 2-core machine delays one attempt by a hundred milliseconds and more): the slots
are fixed in advance, so one attempt that leaves late (a busy event loop) shortens only the gap
to the next one and the rate does not drift (seen on an idle machine at 4/s: gaps of 0.322 s
then 0.179 s). A limiter that did not wait, or let a burst through, puts arrivals a few
milliseconds apart; one that ran at the default instead of the rate asked for is caught by the
longer spans.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from ingest.simulator.recording import Recording
from ingest.simulator.server import Simulator, SimulatorOptions
from tests.acceptance.test_cli import cli_env, start_cli
from tests.conftest import TOKEN, wait_until
from tests.integration.test_resilience import generated

FIXTURES = 6
SLACK = 0.8  # of the interval 1/R: how much earlier than its slot an arrival may seem
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TimedSimulator(Simulator):
    """The simulator, noting the arrival (monotonic time, fixture) of every websocket request
    to a fixture's actions path, before it is answered."""

    def __init__(self, recordings: list[Recording], options: SimulatorOptions) -> None:
        super().__init__(recordings, options)
        self.arrivals: list[tuple[float, uuid.UUID]] = []

    def app(self) -> web.Application:
        app = super().app()

        @web.middleware
        async def note_arrival(request: web.Request, handler: Handler) -> web.StreamResponse:
            fixture = request.match_info.get("fixture_id")
            if fixture is not None and request.path.endswith("/actions"):
                self.arrivals.append((time.monotonic(), uuid.UUID(fixture)))
            return await handler(request)

        app.middlewares.append(note_arrival)
        return app


@pytest.fixture(scope="module")
def recordings() -> list[Recording]:
    return [generated(seed) for seed in range(101, 101 + FIXTURES)]


@pytest.fixture
async def feed(recordings: list[Recording]) -> AsyncIterator[TimedSimulator]:
    # paced as recorded (packets seconds apart): the connections stay open and quiet, so the
    # measured arrivals are not disturbed by a backfill's load
    sim = TimedSimulator(recordings, SimulatorOptions(token=TOKEN, heartbeat_interval=1.0))
    await sim.start()
    yield sim
    await sim.stop()


async def arrivals_of_a_run(
    sim: TimedSimulator, database_url: str, recordings: list[Recording], *args: str, **env: str
) -> list[float]:
    """Run the worker on every fixture until each has an authenticated connection, stop it
    (SIGTERM, exit 0), and return the sorted arrival times of its websocket requests."""
    proc = await start_cli(
        "run",
        *(str(r.fixture_id) for r in recordings),
        *args,
        env=cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=sim.url,
                    INGEST_TOKEN=TOKEN, **env),
    )  # fmt: skip
    try:

        async def all_connected() -> bool:
            if proc.returncode is not None:
                raise AssertionError(f"the worker exited {proc.returncode} early")
            return all(sim.counters[r.fixture_id].connections >= 1 for r in recordings)

        await wait_until(all_connected, timeout=30)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0, err.decode()[-3000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # one attempt per fixture: no reconnect or refusal muddles what is measured
    assert sorted(f for _, f in sim.arrivals) == sorted(r.fixture_id for r in recordings)
    return sorted(t for t, _ in sim.arrivals)


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 3) for a, b in itertools.pairwise(times)]


def too_close(times: list[float], rate: float) -> list[tuple[int, int, float]]:
    """Pairs of arrivals (i, j, seconds apart) closer than (j - i - SLACK) / rate: more attempts
    in some window than the rate allows."""
    return [
        (i, j, round(times[j] - times[i], 3))
        for i in range(len(times))
        for j in range(i + 1, len(times))
        if times[j] - times[i] < (j - i - SLACK) / rate
    ]


@pytest.mark.parametrize(
    ("rate", "args", "env"),
    [
        (2.5, ("--connect-rate", "2.5"), {}),
        (3.0, (), {"INGEST_CONNECT_RATE": "3"}),
        (4.0, (), {}),  # the default, as the README gives it
    ],
    ids=["flag", "variable", "default"],
)
async def test_connection_attempts_across_all_fixtures_are_spaced_by_the_connect_rate(
    feed: TimedSimulator,
    database_url: str,
    recordings: list[Recording],
    rate: float,
    args: tuple[str, ...],
    env: dict[str, str],
) -> None:
    times = await arrivals_of_a_run(feed, database_url, recordings, *args, **env)
    # no window holds more attempts than the rate allows (consecutive ones at least a fifth of
    # an interval apart, the six over at least 4.2 intervals); the rates asked for are below the
    # default 4 a second, so a flag or a variable that were ignored fail too
    assert not too_close(times, rate), (rate, gaps(times))
    # spaced out, not serialised nor slower than asked (a loose bound: start-up and load)
    assert times[-1] - times[0] <= (FIXTURES - 1) / rate + 3.0, (rate, gaps(times))


async def test_connect_rate_0_does_not_throttle(
    feed: TimedSimulator, database_url: str, recordings: list[Recording]
) -> None:
    times = await arrivals_of_a_run(feed, database_url, recordings, "--connect-rate", "0")
    span = times[-1] - times[0]
    # at the default 4 a second the six attempts would span 1.25 s (1.05 s with the slack)
    # and no two would arrive within 0.2 s of each other; without a limit they go at once
    # (a few tens of milliseconds for all six on an idle machine)
    assert span < (FIXTURES - 1 - SLACK) / 4, gaps(times)
    assert min(gaps(times)) < SLACK / 4, gaps(times)
