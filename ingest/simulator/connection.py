"""One client connection to the simulator: the token check, then packets and heartbeats.

After the token (:func:`authenticate`), a :class:`Connection` runs three tasks: one sends the
recording from the client's position on, paced by its times (or at once for ``speed=fast``),
with the connection's faults; one sends heartbeats; one reads, to answer pings and notice the
client going away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from aiohttp import WSMsgType, web

from ingest.simulator.faults import HOSTILE, MALFORMED, Faults
from ingest.simulator.recording import Recording

if TYPE_CHECKING:
    from ingest.simulator.server import SimulatorOptions

AUTH_REFUSED = {
    "message": "The supplied authentication is invalid",
    "level": "ERROR",
    "statusCode": 401,
}
AUTH_ACCEPTED = {"message": "Authorisation accepted", "level": "INFO"}
POLICY_VIOLATION = 1008


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


async def authenticate(
    ws: web.WebSocketResponse, faults: Faults, options: SimulatorOptions
) -> bool:
    """Wait for the token as the first message; acknowledge it, or refuse it and close."""
    try:
        msg = await ws.receive(timeout=options.auth_timeout)
    except TimeoutError:
        msg = None
    token: object = None
    if msg is not None and msg.type is WSMsgType.TEXT:
        with contextlib.suppress(ValueError):
            first = json.loads(msg.data)
            token = first.get("authToken") if isinstance(first, dict) else None
    expected = options.token
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


class Connection:
    """One authenticated client connection and its fault state."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        faults: Faults,
        transport: asyncio.BaseTransport | None,
        options: SimulatorOptions,
        counters: FixtureCounters,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.faults = faults
        self.options = options
        self.counters = counters
        self.stall_until = 0.0

    def start(
        self, recording: Recording, skip: int, *, fast: bool, started: float
    ) -> set[asyncio.Task[None]]:
        """The connection's tasks; the first to end ends the connection. ``started`` is when
        the simulator started (``time.monotonic()``), the origin of a live timeline."""
        return {
            asyncio.create_task(self._drain()),  # ends when the client goes away
            asyncio.create_task(self._heartbeats()),
            asyncio.create_task(self._serve(recording, skip, fast=fast, started=started)),
        }

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
            transport = self.transport
            if transport is not None and hasattr(transport, "abort"):  # uvloop's is no subclass
                sock = transport.get_extra_info("socket")
                if sock is not None:  # linger 0: the kernel answers with RST, on every loop
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                transport.abort()  # an abrupt TCP reset: no close frame
            return
        await self.ws.close(code=1011, message=b"simulated drop")

    async def _serve(self, recording: Recording, skip: int, *, fast: bool, started: float) -> None:
        faults, counters = self.faults, self.counters
        try:
            for sent, (line, due) in enumerate(
                self._schedule(recording, skip, fast=fast, started=started), 1
            ):
                if due > 0:
                    await asyncio.sleep(due)
                await self.stalled()
                await self.ws.send_str(line)
                counters.packets_sent += 1
                if faults.malformed_every and sent % faults.malformed_every == 0:
                    data, binary = MALFORMED[(sent // faults.malformed_every - 1) % len(MALFORMED)]
                    await (self.ws.send_bytes(data) if binary else self.ws.send_str(data.decode()))
                if faults.hostile_every and sent % faults.hostile_every == 0:
                    data, binary = HOSTILE[(sent // faults.hostile_every - 1) % len(HOSTILE)]
                    await self.send_raw(data, binary=binary)
                    counters.hostile_sent += 1
                if faults.stall_after is not None and sent == faults.stall_after:
                    self.stall_until = time.monotonic() + faults.stall_seconds
                if faults.drop_after is not None and sent >= faults.drop_after:
                    await self.drop()
                    return
            if recording.finished:
                await self.ws.close()
            else:
                await asyncio.Future()  # still being played: stay connected, heartbeats go on
        except (ConnectionResetError, RuntimeError):
            pass  # the client went away

    def _schedule(
        self, recording: Recording, skip: int, *, fast: bool, started: float
    ) -> Iterable[tuple[str, float]]:
        """Yield (line, seconds to wait before sending it) from position ``skip`` on."""
        options = self.options
        scale = options.time_scale
        cap = options.max_gap
        first_time = next((t for t in recording.times if t is not None), None)
        previous: float | None = None
        for line, at in zip(recording.lines[skip:], recording.times[skip:], strict=True):
            if options.live and at is not None and first_time is not None:
                # the packet happens at a fixed moment after the simulator started
                due_at = started + (at - first_time - options.live_offset) / scale
                yield line, due_at - time.monotonic()
                continue
            delay = 0.0
            if not fast and previous is not None and at is not None and at > previous:
                delay = (at - previous) / scale
                if cap is not None:
                    delay = min(delay, cap)
            previous = at if at is not None else previous
            yield line, delay

    async def _heartbeats(self) -> None:
        while not self.ws.closed:
            await asyncio.sleep(self.options.heartbeat_interval)
            await self.stalled()
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await self.ws.send_str(
                    json.dumps({"message": f"Heartbeat sent at {stamp}", "level": "INFO"})
                )
                self.counters.heartbeats_sent += 1

    async def _drain(self) -> None:
        """Read (and so answer pings and notice a close) until the client goes away."""
        async for _ in self.ws:
            pass
