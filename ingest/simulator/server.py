"""A local feed that speaks the provider's protocol (SPEC sections 1 and 5).

Same URL path, the Accept check (HTTP 400), the token as the first message (an error message and a
close when it is wrong or missing), the auth acknowledgement, heartbeats at a configurable
interval, ``startPosition`` (0-based, or 1-based on request) and ``speed`` fast / normal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

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


@dataclass
class SimulatorOptions:
    token: str | None = None  # None: any non-empty token is accepted
    heartbeat_interval: float = 10.0
    one_based: bool = False  # startPosition = seqNum of the last packet + 1
    time_scale: float = 1.0  # speed=normal: recorded pacing divided by this
    auth_timeout: float = 10.0
    max_gap: float = 60.0  # speed=normal: never wait longer than this between packets
    drop_after: int | None = None  # fault: close each connection after this many packets


class Simulator:
    """Serves recordings for any number of fixtures; ``start()`` for tests, ``serve()`` for CLI."""

    def __init__(self, recordings: Iterable[Recording], options: SimulatorOptions) -> None:
        self.recordings = {r.fixture_id: r for r in recordings}
        self.options = options
        self.connections = 0  # successful upgrades, for tests and logs
        self._runner: web.AppRunner | None = None
        self.port = 0

    def __repr__(self) -> str:
        return f"Simulator(fixtures={len(self.recordings)}, port={self.port})"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/snooker/fixtures/{fixture_id}/actions", self._actions)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start listening; return the base URL (``ws://host:port``)."""
        self._runner = web.AppRunner(
            self.app(), handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return f"ws://{host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

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

        ws = web.WebSocketResponse(autoping=True, max_msg_size=1024 * 1024)
        await ws.prepare(request)
        if not await self._authenticate(ws):
            return ws
        self.connections += 1
        skip = max(start - 1, 0) if self.options.one_based else start
        tasks = {
            asyncio.create_task(self._drain(ws)),  # ends when the client goes away
            asyncio.create_task(self._heartbeats(ws)),
            asyncio.create_task(self._serve(ws, recording, skip, fast=speed == "fast")),
        }
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return ws

    async def _authenticate(self, ws: web.WebSocketResponse) -> bool:
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
        ok = isinstance(token, str) and token != "" and (expected is None or token == expected)
        if not ok:
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await ws.send_str(json.dumps(AUTH_REFUSED))
                await ws.close(code=POLICY_VIOLATION, message=b"authentication failed")
            return False
        await ws.send_str(json.dumps(AUTH_ACCEPTED))
        return True

    async def _serve(
        self, ws: web.WebSocketResponse, recording: Recording, skip: int, *, fast: bool
    ) -> None:
        try:
            sent = await self._send_packets(ws, recording, skip, fast=fast)
            if self.options.drop_after is not None and sent == self.options.drop_after:
                await ws.close(code=1011, message=b"simulated drop")
            elif recording.finished:
                await ws.close()
            else:
                await asyncio.Future()  # a live fixture: stay connected, heartbeats go on
        except (ConnectionResetError, RuntimeError):
            pass  # the client went away

    async def _send_packets(
        self, ws: web.WebSocketResponse, recording: Recording, skip: int, *, fast: bool
    ) -> int:
        previous: float | None = None
        lines, times = recording.lines[skip:], recording.times[skip:]
        if self.options.drop_after is not None:
            lines, times = lines[: self.options.drop_after], times[: self.options.drop_after]
        for line, at in zip(lines, times, strict=True):
            if not fast and previous is not None and at is not None and at > previous:
                delay = min((at - previous) / self.options.time_scale, self.options.max_gap)
                await asyncio.sleep(delay)
            previous = at if at is not None else previous
            await ws.send_str(line)
        return len(lines)

    async def _heartbeats(self, ws: web.WebSocketResponse) -> None:
        while not ws.closed:
            await asyncio.sleep(self.options.heartbeat_interval)
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await ws.send_str(
                    json.dumps({"message": f"Heartbeat sent at {stamp}", "level": "INFO"})
                )

    @staticmethod
    async def _drain(ws: web.WebSocketResponse) -> None:
        """Read (and so answer pings and notice a close) until the client goes away."""
        async for _ in ws:
            pass
