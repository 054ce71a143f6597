"""A local feed that speaks the provider's protocol (SPEC sections 1 and 5).

Same URL path, the Accept check (HTTP 400), the token as the first message (an error message and a
close when it is wrong or missing), the auth acknowledgement, heartbeats at a configurable
interval, ``startPosition`` (0-based, or 1-based on request), ``speed`` fast / normal, and a live
mode in which a fixture "is being played": a late client first catches up, then receives packets
as they happen.

Faults for tests, global or per fixture, set by flags or at run time through the control
endpoint (``POST /_control/faults``): drop the connection after N packets (a clean close or an
abrupt TCP reset), stall without packets or heartbeats (pings are still answered, as by most
servers), send malformed frames or hostile ones (:data:`HOSTILE`), refuse new connections
(HTTP 503), refuse the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import WSMsgType, web

from ingest.simulator.recording import Recording

log = logging.getLogger(__name__)

ACCEPT = "application/vnd.imggaming.dde.api+json;version=1"
AUTH_REFUSED = {
    "message": "The supplied authentication is invalid",
    "level": "ERROR",
    "statusCode": 401,
}
AUTH_ACCEPTED = {"message": "Authorisation accepted", "level": "INFO"}
POLICY_VIOLATION = 1008
MALFORMED: tuple[tuple[bytes, bool], ...] = (
    (b'{"fixtureAction": {"fixtureSeqNum": ', False),  # truncated JSON
    (b"\x00\x01binary\xff", True),  # a binary frame
    (b'[{"fixtureAction": {}}]', False),  # a JSON array
)
# Frames built to break a client: each must be rejected, and none may stop it or change a row.
HOSTILE: tuple[tuple[bytes, bool], ...] = (
    (b"[" * 100_000 + b"]" * 100_000, False),  # nested beyond any parser's limit
    (b'{"fixtureAction": {"action": {}, "fixtureSeqNum": null, "id": null}}', False),
    (b'{"fixtureAction": {"actionId": "h", "fixtureSeqNum": "abc"}}', False),
    (b'{"fixtureAction": {"actionId": "h", "fixtureSeqNum": 0}}', False),
    (b'{"fixtureAction": {"actionId": "h", "fixtureSeqNum": -5}}', False),
    (b'{"fixtureAction": {"actionId": "h", "fixtureSeqNum": 1.5}}', False),
    (b'{"fixtureAction": {"actionId": "h", "fixtureSeqNum": true}}', False),
    (b'{"fixtureAction": {"actionId": "h", "fixtureSeqNum": 1180591620717411303424}}', False),
    (b'{"fixtureAction": {"actionId": "h", "fixtureSeqNum": NaN}}', False),
    (b'{"fixtureAction": {"actionId": "\\ud800", "fixtureSeqNum": "\\u0000"}}', False),
    (b'{"fixtureAction": {"actionId": "unnumbered in a numbered feed"}}', False),
    (b'{"fixtureAction": {"fixtureSeqNum": "big", "x": "' + b"x" * 2_000_000 + b'"}}', False),
    (b'{"fixtureAction": [1, 2, 3]}', False),
    (b"\xff\xfe not UTF-8 \x00", False),
    (bytes(range(256)) * 64, True),  # binary
)


@dataclass
class Faults:
    """What to do wrong. Counts are per connection; times are seconds."""

    drop_after: int | None = None  # close each connection after this many packets
    drop_mode: Literal["close", "reset"] = "close"  # a close frame, or an abrupt TCP reset
    stall_after: int | None = None  # after this many packets on a connection, go silent ...
    stall_seconds: float = 0.0  # ... for this long: no packets, no heartbeats
    malformed_every: int | None = None  # send a malformed frame after every N packets
    hostile_every: int | None = None  # send one of HOSTILE after every N packets
    refuse_until: float = 0.0  # time.monotonic() before which new connections get HTTP 503
    refuse_token: bool = False  # refuse every token, as after its expiry

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a JSON body from the control endpoint (``refuse_seconds`` is relative)."""
        changes = dict(changes)
        if "refuse_seconds" in changes:
            changes["refuse_until"] = time.monotonic() + float(changes.pop("refuse_seconds"))
        names = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(sorted(unknown))}")
        for name, value in changes.items():
            setattr(self, name, value)


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


@dataclass
class FixtureCounters:
    connections: int = 0  # authenticated connections
    active: int = 0  # open right now
    max_active: int = 0  # the most ever open at once
    refused: int = 0  # HTTP 503 answers
    auth_refused: int = 0
    packets_sent: int = 0
    hostile_sent: int = 0
    heartbeats_sent: int = 0


class Simulator:
    """Serves any number of fixtures; ``start()`` returns the base URL to give the client."""

    def __init__(self, recordings: Iterable[Recording], options: SimulatorOptions) -> None:
        self.recordings = {r.fixture_id: r for r in recordings}
        self.options = options
        self.fixture_faults: dict[uuid.UUID, Faults] = {}
        self.counters: dict[uuid.UUID, FixtureCounters] = {
            f: FixtureCounters() for f in self.recordings
        }
        self._open: dict[uuid.UUID, set[_Connection]] = {}  # authenticated, not yet closed
        self._runner: web.AppRunner | None = None
        self._started = time.monotonic()
        self.started_wall = time.time()
        self.port = 0
        self.url = ""

    def __repr__(self) -> str:
        return f"Simulator(fixtures={len(self.recordings)}, port={self.port})"

    def add_recording(self, recording: Recording) -> None:
        """A new fixture appears (for discovery tests)."""
        self.recordings[recording.fixture_id] = recording
        self.counters.setdefault(recording.fixture_id, FixtureCounters())

    def faults_for(self, fixture_id: uuid.UUID) -> Faults:
        return self.fixture_faults.get(fixture_id, self.options.faults)

    def set_faults(self, fixture_id: uuid.UUID | None = None, **changes: Any) -> None:
        """Change faults while running: for one fixture, or for all when ``fixture_id`` is None."""
        if fixture_id is None:
            self.options.faults.update(changes)
            return
        faults = self.fixture_faults.setdefault(
            fixture_id, dataclasses.replace(self.options.faults)
        )
        faults.update(changes)

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
        app.router.add_post("/_control/faults", self._control_faults)
        app.router.add_delete("/_control/faults", self._control_clear)
        app.router.add_get("/_control/stats", self._control_stats)
        app.router.add_get("/_control/clock", self._control_clock)
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
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- the control endpoint -------------------------------------------------------------

    async def _control_faults(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            raw_id = body.pop("fixture_id", None)
            fixture_id = uuid.UUID(raw_id) if raw_id else None
            self.set_faults(fixture_id, **body)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    async def _control_clear(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return web.json_response({"ok": True})

    async def _control_stats(self, request: web.Request) -> web.Response:
        return web.json_response({str(f): dataclasses.asdict(c) for f, c in self.counters.items()})

    async def _control_clock(self, request: web.Request) -> web.Response:
        """When the live timeline began (wall clock), for latency measurements."""
        return web.json_response(
            {
                "started": self.started_wall,
                "time_scale": self.options.time_scale,
                "live": self.options.live,
                "live_offset": self.options.live_offset,
            }
        )

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
        if not await self._authenticate(ws, faults):
            counters.auth_refused += 1
            return ws
        counters.connections += 1
        counters.active += 1
        counters.max_active = max(counters.max_active, counters.active)
        connection = _Connection(ws, faults, request.transport)
        self._open.setdefault(fixture_id, set()).add(connection)
        skip = max(start - 1, 0) if self.options.one_based else start
        tasks = {
            asyncio.create_task(self._drain(ws)),  # ends when the client goes away
            asyncio.create_task(self._heartbeats(connection, counters)),
            asyncio.create_task(
                self._serve(connection, recording, counters, skip, fast=speed == "fast")
            ),
        }
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            counters.active -= 1
            self._open[fixture_id].discard(connection)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return ws

    async def _authenticate(self, ws: web.WebSocketResponse, faults: Faults) -> bool:
        try:
            msg = await ws.receive(timeout=self.options.auth_timeout)
        except TimeoutError:
            msg = None
        token: object = None
        if msg is not None and msg.type is WSMsgType.TEXT:
            with contextlib.suppress(ValueError):
                first = json.loads(msg.data)
                token = first.get("authToken") if isinstance(first, dict) else None
        expected = self.options.token
        ok = (
            isinstance(token, str)
            and token != ""
            and (expected is None or token == expected)
            and not faults.refuse_token
        )
        if not ok:
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await ws.send_str(json.dumps(AUTH_REFUSED))
                await ws.close(code=POLICY_VIOLATION, message=b"authentication failed")
            return False
        await ws.send_str(json.dumps(AUTH_ACCEPTED))
        return True

    async def _serve(
        self,
        conn: _Connection,
        recording: Recording,
        counters: FixtureCounters,
        skip: int,
        *,
        fast: bool,
    ) -> None:
        faults = conn.faults
        try:
            for sent, (line, due) in enumerate(self._schedule(recording, skip, fast=fast), 1):
                if due > 0:
                    await asyncio.sleep(due)
                await conn.stalled()
                await conn.ws.send_str(line)
                counters.packets_sent += 1
                if faults.malformed_every and sent % faults.malformed_every == 0:
                    data, binary = MALFORMED[(sent // faults.malformed_every - 1) % len(MALFORMED)]
                    await (conn.ws.send_bytes(data) if binary else conn.ws.send_str(data.decode()))
                if faults.hostile_every and sent % faults.hostile_every == 0:
                    data, binary = HOSTILE[(sent // faults.hostile_every - 1) % len(HOSTILE)]
                    await conn.send_raw(data, binary=binary)
                    counters.hostile_sent += 1
                if faults.stall_after is not None and sent == faults.stall_after:
                    conn.stall_until = time.monotonic() + faults.stall_seconds
                if faults.drop_after is not None and sent >= faults.drop_after:
                    await conn.drop()
                    return
            if recording.finished:
                await conn.ws.close()
            else:
                await asyncio.Future()  # still being played: stay connected, heartbeats go on
        except (ConnectionResetError, RuntimeError):
            pass  # the client went away

    def _schedule(
        self, recording: Recording, skip: int, *, fast: bool
    ) -> Iterable[tuple[str, float]]:
        """Yield (line, seconds to wait before sending it) from position ``skip`` on."""
        scale = self.options.time_scale
        cap = self.options.max_gap
        first_time = next((t for t in recording.times if t is not None), None)
        previous: float | None = None
        for line, at in zip(recording.lines[skip:], recording.times[skip:], strict=True):
            if self.options.live and at is not None and first_time is not None:
                # the packet happens at a fixed moment after the simulator started
                due_at = self._started + (at - first_time - self.options.live_offset) / scale
                yield line, due_at - time.monotonic()
                continue
            delay = 0.0
            if not fast and previous is not None and at is not None and at > previous:
                delay = (at - previous) / scale
                if cap is not None:
                    delay = min(delay, cap)
            previous = at if at is not None else previous
            yield line, delay

    async def _heartbeats(self, conn: _Connection, counters: FixtureCounters) -> None:
        while not conn.ws.closed:
            await asyncio.sleep(self.options.heartbeat_interval)
            await conn.stalled()
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await conn.ws.send_str(
                    json.dumps({"message": f"Heartbeat sent at {stamp}", "level": "INFO"})
                )
                counters.heartbeats_sent += 1

    @staticmethod
    async def _drain(ws: web.WebSocketResponse) -> None:
        """Read (and so answer pings and notice a close) until the client goes away."""
        async for _ in ws:
            pass


class _Connection:
    """One client connection and its fault state."""

    def __init__(
        self, ws: web.WebSocketResponse, faults: Faults, transport: asyncio.BaseTransport | None
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.faults = faults
        self.stall_until = 0.0

    async def stalled(self) -> None:
        """Wait out a stall (no packets, no heartbeats)."""
        remaining = self.stall_until - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)

    async def send_raw(self, data: bytes, *, binary: bool) -> None:
        """Send bytes as they are, in a text frame even when they are not UTF-8."""
        await self.ws.send_frame(data, WSMsgType.BINARY if binary else WSMsgType.TEXT)

    async def drop(self, mode: Literal["close", "reset"] | None = None) -> None:
        if (mode or self.faults.drop_mode) == "reset":
            if isinstance(self.transport, asyncio.Transport):
                self.transport.abort()  # an abrupt TCP reset: no close frame
            return
        await self.ws.close(code=1011, message=b"simulated drop")
