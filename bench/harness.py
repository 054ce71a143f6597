"""Shared plumbing: a database server, a simulator process, the reference implementations."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from ingest import embedded
from ingest.db.store import Store
from ingest.packet import Action, classify
from ingest.simulator.generator import MatchSpec, generate_match, match_id_for_seed, to_jsonl
from ingest.source import ACCEPT, actions_url, feed_session

TOKEN = "bench-token"
ROW_COLUMNS = (
    "fixture_id", "seq", "payload", "received_at", "finished", "action_id", "fixture_seq_num",
    "action_type_id", "action_type", "action_subtype_id", "action_subtype", "send_type_id",
    "send_type", "period", "provider_ts", "timeline_sequence", "team_id", "player_id", "side",
)  # fmt: skip


@dataclass(frozen=True)
class Match:
    seed: int
    fixture_id: uuid.UUID
    lines: list[str]
    times: list[float]  # provider timestamp of each packet, POSIX seconds

    @property
    def packets(self) -> int:
        return len(self.lines)


def make_matches(first_seed: int, count: int, best_of: int) -> list[Match]:
    matches = []
    for seed in range(first_seed, first_seed + count):
        generated = generate_match(MatchSpec(seed=seed, best_of=best_of))
        lines = to_jsonl(generated.packets).splitlines()
        times = [
            datetime.fromisoformat(p["fixtureAction"]["timestamp"]).timestamp()
            for p in generated.packets
        ]
        matches.append(Match(seed, match_id_for_seed(seed), lines, times))
    return matches


# -- PostgreSQL -------------------------------------------------------------------------------


class Databases:
    """A server (embedded unless INGEST_BENCH_DATABASE_URL is set) and fresh databases on it."""

    def __init__(self) -> None:
        configured = os.environ.get("INGEST_BENCH_DATABASE_URL")
        if configured:
            self.server_url = configured
            self.description = make_url(configured).render_as_string(hide_password=True)
        else:
            root = Path(tempfile.mkdtemp(prefix="ingest-bench-pg-"))
            self.server_url = embedded.start(root / "pgdata", delete_on_exit=True)
            self.description = "embedded PostgreSQL (temporary)"
        self._template: str | None = None
        self._made: list[str] = []

    def url(self, name: str) -> str:
        return make_url(self.server_url).set(database=name).render_as_string(hide_password=False)

    def plain(self, name: str) -> str:
        url = make_url(self.url(name)).set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    async def fresh(self) -> str:
        """A new migrated database; returns its URL."""
        admin = await asyncpg.connect(self.plain(make_url(self.server_url).database or "postgres"))
        try:
            if self._template is None:
                self._template = f"bench_tpl_{os.getpid()}"
                await admin.execute(f'DROP DATABASE IF EXISTS "{self._template}"')
                await admin.execute(f'CREATE DATABASE "{self._template}"')
                store = Store.connect(self.url(self._template))
                await store.migrate()
                await store.close()
            name = f"bench_{uuid.uuid4().hex[:10]}"
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')
            self._made.append(name)
        finally:
            await admin.close()
        return self.url(name)

    async def drop_all(self) -> None:
        admin = await asyncpg.connect(self.plain(make_url(self.server_url).database or "postgres"))
        try:
            for name in [*self._made, *([self._template] if self._template else [])]:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def asyncpg_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def count_rows(url: str) -> int:
    conn = await asyncpg.connect(asyncpg_url(url))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM actions"))
    finally:
        await conn.close()


# -- the simulator, in a process of its own -----------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def simulator_process(
    matches: Sequence[Match], *extra: str, heartbeat: float = 10.0
) -> Iterator[str]:
    """Run ``ingest feed serve`` for these matches; yield its base URL."""
    with tempfile.TemporaryDirectory(prefix="ingest-bench-feed-") as folder:
        args = []
        for match in matches:
            path = Path(folder) / f"{match.fixture_id}.jsonl"
            path.write_text("\n".join(match.lines) + "\n")
            args += ["--recording", str(path)]
        port = free_port()
        env = {**os.environ, "INGEST_TOKEN": TOKEN, "INGEST_LOG_LEVEL": "WARNING"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "ingest", "feed", "serve", "--port", str(port),
             "--heartbeat-interval", str(heartbeat), *args, *extra],
            env=env,
        )  # fmt: skip
        try:
            _wait_for_port(port, proc)
            yield f"ws://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the simulator exited before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError("the simulator did not start listening")


async def simulator_clock(feed: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(feed.replace("ws://", "http://") + "/_control/clock") as response,
    ):
        result: dict[str, Any] = await response.json()
        return result


# -- reference points -------------------------------------------------------------------------


async def raw_receive(feed: str, fixtures: Sequence[uuid.UUID]) -> int:
    """Read and parse every fixture's stream concurrently, storing nothing: the socket's limit."""
    count = 0

    async def one(session: aiohttp.ClientSession, fixture_id: uuid.UUID) -> None:
        nonlocal count
        async with session.ws_connect(
            actions_url(feed, fixture_id),
            params={"startPosition": "0", "speed": "fast"},
            headers={"Accept": ACCEPT},
            max_msg_size=16 * 1024 * 1024,
        ) as ws:
            await ws.send_str(json.dumps({"authToken": TOKEN}))
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    packet = json.loads(msg.data)
                    if "fixtureAction" in packet:
                        count += 1
                        if packet.get("finished"):
                            return

    async with feed_session() as session:
        await asyncio.gather(*(one(session, f) for f in fixtures))
    return count


def parsed_rows(matches: Sequence[Match]) -> list[tuple[Any, ...]]:
    """The rows our writer would insert, already parsed (input for ``raw_copy``)."""
    now = datetime.now(UTC)
    rows = []
    for match in matches:
        for i, line in enumerate(match.lines, 1):
            frame = classify(line.encode(), binary=False, position=i, received_at=now)
            assert isinstance(frame, Action)
            rows.append(
                (
                    match.fixture_id, frame.seq, frame.payload, frame.received_at, frame.finished,
                    frame.action_id, frame.fixture_seq_num, frame.type_id, frame.type_name,
                    frame.subtype_id, frame.subtype_name, frame.send_type_id, frame.send_type,
                    frame.period, frame.provider_ts, frame.timeline_sequence, frame.team_id,
                    frame.player_id, frame.side,
                )
            )  # fmt: skip
    return rows


async def raw_copy(url: str, rows: Sequence[tuple[Any, ...]]) -> float:
    """COPY the parsed rows into ``actions`` (same table, same indexes): the database's limit.

    Returns the seconds the copy took.
    """
    conn = await asyncpg.connect(asyncpg_url(url))
    try:
        started = time.perf_counter()
        await conn.copy_records_to_table("actions", records=rows, columns=ROW_COLUMNS)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def naive(url: str, feed: str, fixtures: Sequence[uuid.UUID]) -> int:
    """What a user writes first: one INSERT ... ON CONFLICT DO NOTHING and one commit a packet."""
    asyncpg_url = make_url(url).set(drivername="postgresql+asyncpg")
    engine = create_async_engine(asyncpg_url, pool_size=max(len(fixtures), 5))
    sessions = async_sessionmaker(engine)
    insert = text(
        "INSERT INTO actions (fixture_id, seq, payload, received_at) "
        "VALUES (:f, :s, CAST(:p AS jsonb), now()) ON CONFLICT DO NOTHING"
    )
    count = 0

    async def one(http: aiohttp.ClientSession, fixture_id: uuid.UUID) -> None:
        nonlocal count
        async with (
            sessions() as db,
            http.ws_connect(
                actions_url(feed, fixture_id),
                params={"startPosition": "0", "speed": "fast"},
                headers={"Accept": ACCEPT},
                max_msg_size=16 * 1024 * 1024,
            ) as ws,
        ):
            await ws.send_str(json.dumps({"authToken": TOKEN}))
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                packet = json.loads(msg.data)
                if "fixtureAction" not in packet:
                    continue
                seq = packet["fixtureAction"]["fixtureSeqNum"]
                await db.execute(insert, {"f": fixture_id, "s": seq, "p": msg.data})
                await db.commit()
                count += 1
                if packet.get("finished"):
                    return

    try:
        async with feed_session() as http:
            await asyncio.gather(*(one(http, f) for f in fixtures))
    finally:
        await engine.dispose()
    return count


# -- the worker in a process of its own --------------------------------------------------------


@contextlib.asynccontextmanager
async def worker_process(
    url: str, feed: str, fixtures: Sequence[uuid.UUID], *extra: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {
        **os.environ,
        "INGEST_DATABASE_URL": url,
        "INGEST_FEED_URL": feed,
        "INGEST_TOKEN": TOKEN,
        "INGEST_LOG_LEVEL": "WARNING",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ingest", "run", "--connect-rate", "0", *extra,
        *(str(f) for f in fixtures), env=env,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
