"""A local feed that speaks the provider's protocol (docs/feed.md: the feed, the simulator).

Same URL path, the Accept check (HTTP 400), the token as the first message (an error message and a
close when it is wrong or missing), the auth acknowledgement, heartbeats at a configurable
interval, ``startPosition`` (0-based, or 1-based on request), ``speed`` fast / normal, and a live
mode in which a fixture "is being played": a late client first catches up, then receives packets
as they happen.

Faults for tests (:mod:`ingest.simulator.faults`), global or per fixture, set by flags or at run
time through the control endpoint (:mod:`ingest.simulator.control`). What happens on one client
connection is :mod:`ingest.simulator.connection`; this module is the server: the fixtures it
serves, the requests it accepts, and faults injected into open connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from ingest.simulator.connection import Connection, FixtureCounters, LiveStream, authenticate
from ingest.simulator.control import add_control_routes
from ingest.simulator.faults import HOSTILE, Faults
from ingest.simulator.recording import Recording

__all__ = [  # Faults and HOSTILE are imported from here by tests and bench/chaos.py
    "ACCEPT",
    "HOSTILE",
    "Faults",
    "FixtureCounters",
    "Simulator",
    "SimulatorOptions",
]

log = logging.getLogger(__name__)

ACCEPT = "application/vnd.imggaming.dde.api+json;version=1"


@dataclass
class SimulatorOptions:
    token: str | None = field(default=None, repr=False)  # None: any non-empty token
    heartbeat_interval: float = 10.0
    one_based: bool = False  # startPosition = seqNum of the last packet + 1
    time_scale: float = 1.0  # recorded pacing divided by this (speed=normal and live)
    auth_timeout: float = 10.0
    max_gap: float | None = None  # never wait longer than this between two packets
    live: bool = False  # fixtures are being played from the moment the simulator starts
    live_offset: float = 0.0  # live: seconds of match time already played at that moment
    faults: Faults = field(default_factory=Faults)

    def __post_init__(self) -> None:
        if self.time_scale <= 0 or self.heartbeat_interval <= 0:
            raise ValueError("time_scale and heartbeat_interval must be positive")


class Simulator:
    """Serves any number of fixtures; ``start()`` returns the base URL to give the client."""

    def __init__(self, recordings: Iterable[Recording], options: SimulatorOptions) -> None:
        self.recordings = {r.fixture_id: r for r in recordings}
        self.options = options
        self.fixture_faults: dict[uuid.UUID, Faults] = {}
        self.counters: dict[uuid.UUID, FixtureCounters] = {
            f: FixtureCounters() for f in self.recordings
        }
        self._open: dict[uuid.UUID, set[Connection]] = {}  # authenticated, not yet closed
        self._runner: web.AppRunner | None = None
        self._started = time.monotonic()
        self.started_wall = time.time()
        self.port = 0
        self.url = ""
        self.live: dict[uuid.UUID, LiveStream] = {}  # --live: each fixture's shared stream
        self._timers: set[asyncio.Task[None]] = set()  # suspensions to start or lift later

    def __repr__(self) -> str:
        return f"Simulator(fixtures={len(self.recordings)}, port={self.port})"

    def add_recording(self, recording: Recording) -> None:
        """A new fixture appears (for discovery tests)."""
        self.recordings[recording.fixture_id] = recording
        self.counters.setdefault(recording.fixture_id, FixtureCounters())
        if self.options.live and self._runner is not None:
            self._play(recording)

    def _play(self, recording: Recording) -> None:
        """``--live``: the fixture is being played from the simulator's start on."""
        self.live[recording.fixture_id] = LiveStream(
            recording.fixture_id,
            recording,
            self.options,
            self._started,
            self.started_wall - self._started,
            delay=lambda: self.faults_for(recording.fixture_id).delay_seconds,
        )
        if self.faults_for(recording.fixture_id).suspend_after is not None:
            self._suspend_later(recording.fixture_id)

    def faults_for(self, fixture_id: uuid.UUID) -> Faults:
        return self.fixture_faults.get(fixture_id, self.options.faults)

    def set_faults(self, fixture_id: uuid.UUID | None = None, **changes: Any) -> None:
        """Change faults while running: for one fixture, or for all when ``fixture_id`` is None.

        ``stall_now`` (seconds) stalls the open connections now; ``suspend_now`` (seconds)
        suspends the provider's collection of a live fixture now for that long (0: lifts it
        now); ``suspend_after`` schedules a suspension (of ``suspend_seconds``) after the
        fixture's Nth packet."""
        stall = changes.pop("stall_now", None)
        suspend = changes.pop("suspend_now", None)
        targets = [fixture_id] if fixture_id is not None else list(self.recordings)
        if (suspend is not None or changes.get("suspend_after") is not None) and not (
            self.options.live
        ):
            raise ValueError(
                "provider suspensions need --live: one is injected into the fixture's stream, "
                "which every connection to it shares"
            )
        if fixture_id is None:
            self.options.faults.update(changes)
        else:
            faults = self.fixture_faults.setdefault(
                fixture_id, dataclasses.replace(self.options.faults)
            )
            faults.update(changes)
        for target in targets:
            if stall is not None:
                self.stall_now(target, float(stall))
            if suspend is not None:
                self.suspend_now(target, float(suspend))
            if changes.get("suspend_after") is not None and target in self.live:
                self._suspend_later(target)

    def suspend_now(self, fixture_id: uuid.UUID, seconds: float) -> bool:
        """The provider suspends the live fixture's collection now, for ``seconds`` (then it
        collects again); 0 lifts a suspension now. False when there was nothing to do."""
        stream = self.live.get(fixture_id)
        if stream is None:
            return False
        if seconds <= 0:
            return stream.resume(time.monotonic())
        if not stream.suspend(time.monotonic()):
            return False
        self.counters[fixture_id].suspensions += 1
        held = stream.held

        def lift() -> None:
            if stream.held is held:  # not one lifted meanwhile and begun again
                stream.resume(time.monotonic())

        self._later(seconds, lift)
        return True

    def _suspend_later(self, fixture_id: uuid.UUID) -> None:
        """A suspension after the fixture's ``suspend_after``-th packet (of its live stream)."""
        faults, stream = self.faults_for(fixture_id), self.live[fixture_id]
        index = min(max((faults.suspend_after or 1) - 1, 0), len(stream.recording.lines) - 1)
        seconds = faults.suspend_seconds
        self._later(
            max(stream.due(index) - time.monotonic(), 0.0) + 0.001,
            lambda: self.suspend_now(fixture_id, seconds or 3600.0),
        )

    def _later(self, seconds: float, action: Any) -> None:
        async def wait() -> None:
            await asyncio.sleep(seconds)
            action()

        task = asyncio.create_task(wait())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    def clear_faults(self) -> None:
        self.options.faults = Faults()
        self.fixture_faults.clear()

    # -- faults injected now, into the open connections (for chaos runs) ----------------------

    async def drop_now(self, fixture_id: uuid.UUID, mode: Literal["close", "reset"]) -> int:
        """Drop the fixture's open connections at once; return how many."""
        conns = list(self._open.get(fixture_id, ()))
        for conn in conns:
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await conn.drop(mode)
        return len(conns)

    def stall_now(self, fixture_id: uuid.UUID, seconds: float) -> int:
        """Stop sending packets and heartbeats on the fixture's open connections for a while
        (pings are still answered); return how many."""
        conns = self._open.get(fixture_id, set())
        for conn in conns:
            conn.stall_until = time.monotonic() + seconds
        return len(conns)

    async def send_now(self, fixture_id: uuid.UUID, frames: Iterable[tuple[bytes, bool]]) -> int:
        """Send raw frames (bytes, binary?) on the fixture's open connections; return how many
        frames were sent."""
        sent = 0
        for conn in list(self._open.get(fixture_id, ())):
            for data, binary in frames:
                try:
                    await conn.send_raw(data, binary=binary)
                except (ConnectionResetError, RuntimeError):
                    break
                sent += 1
        return sent

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/snooker/fixtures/{fixture_id}/actions", self._actions)
        app.router.add_get("/snooker/fixtures", self._fixtures_list)
        add_control_routes(app, self)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start listening; return the base URL (``ws://host:port``)."""
        self._runner = web.AppRunner(
            self.app(), handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.port = int(self._runner.addresses[0][1])
        self._started = time.monotonic()
        self.started_wall = time.time()
        self.url = f"ws://{host}:{self.port}"
        if self.options.live:
            for recording in self.recordings.values():
                self._play(recording)
        return self.url

    async def stop(self) -> None:
        for task in list(self._timers):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _fixtures_list(self, request: web.Request) -> web.Response:
        """The provider's REST fixtures list, as far as discovery needs it."""
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        if not token or (self.options.token is not None and token != self.options.token):
            return web.json_response({"message": "Unauthorized"}, status=401)
        live_only = request.query.get("live", "").lower() == "true"
        items = [
            {
                "fixtureId": str(f),
                "sport": "snooker",
                "status": "Finished" if r.finished else "Live",
            }
            for f, r in self.recordings.items()
            if not (live_only and r.finished)
        ]
        return web.json_response({"fixtures": items})

    # -- the protocol ---------------------------------------------------------------------

    async def _actions(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Accept", "") != ACCEPT:
            return web.Response(status=400, text="Request is missing required HTTP header 'Accept'")
        try:
            fixture_id = uuid.UUID(request.match_info["fixture_id"])
        except ValueError:
            return web.Response(status=400, text="fixtureId must be a UUID")
        recording = self.recordings.get(fixture_id)
        if recording is None:
            return web.Response(status=404, text=f"Fixture {fixture_id} not found")
        try:
            start = int(request.query.get("startPosition", "0"))
            if start < 0:
                raise ValueError
        except ValueError:
            return web.Response(status=400, text="startPosition must be a non-negative integer")
        speed = request.query.get("speed", "normal")
        if speed not in ("fast", "normal"):
            return web.Response(status=400, text="speed must be fast or normal")
        faults = self.faults_for(fixture_id)
        counters = self.counters[fixture_id]
        if time.monotonic() < faults.refuse_until:
            counters.refused += 1
            return web.Response(status=503, text="Service temporarily unavailable")

        ws = web.WebSocketResponse(autoping=True, max_msg_size=1024 * 1024)
        await ws.prepare(request)
        if not await authenticate(ws, faults, self.options):
            counters.auth_refused += 1
            return ws
        counters.connections += 1
        counters.active += 1
        counters.max_active = max(counters.max_active, counters.active)
        connection = Connection(ws, faults, request.transport, self.options, counters)
        self._open.setdefault(fixture_id, set()).add(connection)
        skip = max(start - 1, 0) if self.options.one_based else start
        tasks = connection.start(
            recording,
            skip,
            fast=speed == "fast",
            started=self._started,
            live=self.live.get(fixture_id),
        )
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            counters.active -= 1
            self._open[fixture_id].discard(connection)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return ws
