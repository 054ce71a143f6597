"""Shared plumbing: a database server, a simulator process, the reference implementations."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from sqlalchemy.engine import make_url

from ingest import embedded
from ingest.db.store import Store
from ingest.feed.client import ACCEPT, actions_url, feed_session
from ingest.feed.packet import Action, classify
from ingest.simulator.generator import MatchSpec, generate_match, match_id_for_seed, to_jsonl

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


def paced(matches: Sequence[Match], every: float) -> list[Match]:
    """The same packets, one every ``every`` seconds of match time (the footprint's load).

    The first packet keeps its time; fixture i's later packets are shifted by i/len * every, so
    that a thousand fixtures do not all send in the same millisecond.
    """
    out = []
    for i, match in enumerate(matches):
        start = match.times[0]
        shift = every * i / max(1, len(matches))
        lines, times = [], []
        for n, line in enumerate(match.lines):
            at = start if n == 0 else start + shift + n * every
            packet = json.loads(line)
            packet["fixtureAction"]["timestamp"] = datetime.fromtimestamp(at, UTC).isoformat()
            lines.append(json.dumps(packet))
            times.append(at)
        out.append(Match(match.seed, match.fixture_id, lines, times))
    return out


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


@contextlib.contextmanager
def no_collector_pauses() -> Iterator[None]:
    """This process's cyclic garbage collector off while it stamps times.

    The bench process holds every generated match (hundreds of thousands of objects): a full
    collection of that heap took 34-90 ms here, and a notification stamped during one counted
    those milliseconds as the worker's latency (live-latency p99 32-34 ms in two runs with
    them, 15 ms in the next without). What the bench allocates meanwhile is freed by reference
    counting.
    """
    gc.collect()
    gc.freeze()  # what exists now is never scanned again
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


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


# -- the worker and the script, each in a process of its own ------------------------------------


def process_env(url: str, feed: str) -> dict[str, str]:
    return {
        **os.environ,
        "INGEST_DATABASE_URL": url,
        "INGEST_FEED_URL": feed,
        "INGEST_TOKEN": TOKEN,
        "INGEST_LOG_LEVEL": "WARNING",
    }


def ours_command(fixtures: Sequence[uuid.UUID], *extra: str) -> list[str]:
    return [sys.executable, "-m", "ingest", "run", "--connect-rate", "0", *extra,
            *(str(f) for f in fixtures)]  # fmt: skip


def script_command(url: str, feed: str, fixtures: Sequence[uuid.UUID], *extra: str) -> list[str]:
    """``bench/script.py``: the program a user would write instead of ours (see its docstring)."""
    return [sys.executable, "-m", "bench.script", asyncpg_url(url), feed, *extra,
            *(str(f) for f in fixtures)]  # fmt: skip


def careful_command(url: str, feed: str, fixtures: Sequence[uuid.UUID], *extra: str) -> list[str]:
    """``bench/careful.py``: issue 23's careful program, a flush per fixture (see its docstring)."""
    return [sys.executable, "-m", "bench.careful", asyncpg_url(url), feed, *extra,
            *(str(f) for f in fixtures)]  # fmt: skip


async def run_to_end(command: Sequence[str], url: str, feed: str) -> tuple[float, float]:
    """Run a backfill process to its exit: the seconds from start to exit (the whole process),
    and the CPU-seconds (user + system) the process used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*command, env=process_env(url, feed), cwd=_ROOT)
    if await proc.wait() != 0:
        raise RuntimeError(f"{command[2]} exited with {proc.returncode}")
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the process is reaped: counted
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return seconds, cpu


async def time_to_connect(command: Callable[[str], Sequence[str]], url: str) -> float:
    """Seconds from starting ``command(feed_url)`` to its first connection to the feed's port.

    The feed here is a bare TCP listener: the process is stopped once it has connected.
    """
    connected: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def accepted(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not connected.done():
            connected.set_result(time.perf_counter())
        writer.close()

    server = await asyncio.start_server(accepted, "127.0.0.1", 0)
    feed = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *command(feed), env=process_env(url, feed), cwd=_ROOT,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            return await asyncio.wait_for(connected, 60) - started
        finally:
            proc.terminate()
            await proc.wait()
    finally:
        server.close()
        await server.wait_closed()


# What each program imports before its first connection: `python -m ingest run` (its
# __main__ turns the collector off while they load) and bench/script.py (its module's imports)
OUR_IMPORTS = "import gc; gc.disable(); import ingest.cli, ingest.commands, uvloop"
SCRIPT_IMPORTS = "import bench.script"
# one load of the system's certificates, as ssl.create_default_context() makes it: aiohttp makes
# two when it is imported (its verified and its unverified default contexts)
_CERTIFICATES = (
    "import ssl, time; t = time.perf_counter(); ssl.create_default_context(); "
    "print(time.perf_counter() - t)"
)


async def startup_profile(tries: int) -> dict[str, float]:
    """Where a start-up goes, in milliseconds, each the best of ``tries`` runs of a fresh
    interpreter: ``python`` (``python -c pass``), ``ours_imports`` and ``script_imports`` (what
    each imports before connecting, timed in-process), ``certificates`` (one load of the
    system's certificate store) and, from ``-X importtime`` of ours, ``aiohttp`` (its whole
    import, the loads included) and ``own`` (our modules' own import time)."""
    best: dict[str, float] = {}

    def keep(name: str, ms: float) -> None:
        best[name] = min(best.get(name, float("inf")), ms)

    for _ in range(tries):
        started = time.perf_counter()
        await _python("-c", "pass")
        keep("python", (time.perf_counter() - started) * 1000)
        for name, code in (("ours_imports", OUR_IMPORTS), ("script_imports", SCRIPT_IMPORTS)):
            out, _ = await _python("-c", f"import time; t = time.perf_counter(); {code}; "
                                         "print(time.perf_counter() - t)")  # fmt: skip
            keep(name, float(out) * 1000)
        out, _ = await _python("-c", _CERTIFICATES)
        keep("certificates", float(out) * 1000)
        _, err = await _python("-X", "importtime", "-c", OUR_IMPORTS)
        aiohttp_us = own_us = 0
        for line in err.splitlines():  # "import time: <self us> | <cumulative us> | <name>"
            fields = line.removeprefix("import time:").split("|")
            if len(fields) != 3 or not fields[0].strip().isdigit():
                continue  # the header
            name = fields[2].strip()
            if name == "aiohttp":
                aiohttp_us = int(fields[1])
            elif name == "ingest" or name.startswith("ingest."):
                own_us += int(fields[0])
        keep("aiohttp", aiohttp_us / 1000)
        keep("own", own_us / 1000)
    return best


async def _python(*args: str) -> tuple[str, str]:
    """Run this interpreter with ``args`` from the repository's root: its stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=_ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"python {' '.join(args)} exited with {proc.returncode}: {err[-500:]!r}")
    return out.decode(), err.decode()


_ROOT = Path(__file__).resolve().parents[1]


@contextlib.asynccontextmanager
async def worker_process(
    url: str, feed: str, fixtures: Sequence[uuid.UUID], *extra: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        *ours_command(fixtures, *extra), env=process_env(url, feed), cwd=_ROOT
    )
    try:
        yield proc
    finally:
        await stop_process(proc)


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, as systemd stops a unit; SIGKILL if it has not exited within 15 s."""
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# -- a season in the database -------------------------------------------------------------------


async def ingest_season(
    url: str, first_seed: int, count: int, best_of: int, in_play: int = 0
) -> tuple[int, float]:
    """Generate ``count`` matches and store them through the store's write path (the worker's
    batches of up to 500 packets, COPY from 64 on), one match at a time so that memory stays
    flat: finished, but for the last ``in_play``, of which only the first half is stored (still
    in play). Returns (packets stored, seconds spent writing)."""
    store = Store.connect(url)
    packets, writing = 0, 0.0
    now = datetime.now(UTC)
    try:
        for seed in range(first_seed, first_seed + count):
            match = generate_match(MatchSpec(seed=seed, best_of=best_of))
            actions = []
            for i, line in enumerate(to_jsonl(match.packets).splitlines(), 1):
                frame = classify(line.encode(), binary=False, position=i, received_at=now)
                assert isinstance(frame, Action)
                actions.append((match.fixture_id, frame))
            if seed >= first_seed + count - in_play:
                del actions[len(actions) // 2 :]
            started = time.perf_counter()
            for at in range(0, len(actions), 500):
                await store.write(actions[at : at + 500])
            writing += time.perf_counter() - started
            packets += len(actions)
    finally:
        await store.close()
    return packets, writing


async def best_time(conn: asyncpg.Connection, query: str, *args: Any, tries: int = 2) -> float:
    """The best of ``tries`` runs of a query, in seconds (rows fetched and dropped)."""
    times = []
    for _ in range(tries):
        started = time.perf_counter()
        await conn.fetch(query, *args)
        times.append(time.perf_counter() - started)
    return min(times)


async def server_time(conn: asyncpg.Connection, query: str, *args: Any, tries: int = 2) -> float:
    """The best of ``tries`` server-side times of a query, planning and execution, in seconds
    (``EXPLAIN ANALYZE``: the rows are computed but not sent, so a lookup that returns whole
    payloads is not timed by the wire)."""
    times = []
    for _ in range(tries):
        rows = await conn.fetch(f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) {query}", *args)
        plan = json.loads(rows[0][0])[0]
        times.append((plan["Planning Time"] + plan["Execution Time"]) / 1000)
    return min(times)
