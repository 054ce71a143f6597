"""A feed server built on the ``websockets`` library: another websocket stack than ours.

Protocol behaviour is tested against it as well as against our simulator (which shares aiohttp
with the client), so that a shared assumption cannot hide a bug. Like most servers it answers
websocket pings on its own, whatever the application is doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import Event

ACCEPT = "application/vnd.imggaming.dde.api+json;version=1"


class _Connection(ServerConnection):
    """Counts the pings the client sends (they are answered by the library itself)."""

    feed: IndependentFeed

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame) and event.opcode is Opcode.PING:
            self.feed.pings += 1
            self.feed.pinged_at.append(asyncio.get_running_loop().time())
        super().process_event(event)


@dataclass
class IndependentFeed:
    """Serves ``lines`` (JSON text, one packet each) for one fixture, 0-based ``startPosition``.

    ``after``: raw frames (bytes, binary?) sent after the packet at that 1-based position (0:
    before the first packet).
    ``stall_at``: on the first connection only, after that position, send nothing more (and
    keep answering pings) until the client goes away.
    ``pace``: seconds between packets (0: all at once); ``stamp``: what each line becomes when
    it is sent (to give it a timestamp then); ``heartbeat_every``: heartbeats while connected
    (not during a stall).
    """

    fixture_id: uuid.UUID
    lines: Sequence[str]
    token: str
    after: dict[int, list[tuple[bytes, bool]]] = field(default_factory=dict)
    stall_at: int | None = None
    trickle: bytes | None = None  # while stalled, send this frame ...
    trickle_every: float = 1.0  # ... this often (a stuck feed that still sends junk)
    junk_then_close: bytes | None = None  # every connection: send this, then close at once
    finished: bool = True
    pace: float = 0.0
    stamp: Callable[[str], str] | None = None
    heartbeat_every: float | None = None
    starts: list[int] = field(default_factory=list)
    pings: int = 0
    pinged_at: list[float] = field(default_factory=list)  # loop time of each ping
    stalled_at: float | None = None  # loop time the stall began
    reconnected_at: float | None = None  # loop time of the first connection after the stall
    _server: Server | None = None
    url: str = ""

    async def start(self) -> str:
        connection = type("Connection", (_Connection,), {"feed": self})
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            create_connection=connection,
            max_size=1024 * 1024,
            compression=None,
        )
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, conn: ServerConnection) -> None:
        assert conn.request is not None
        if conn.request.headers.get("Accept") != ACCEPT:
            await conn.close(1008, "missing Accept")
            return
        url = urlsplit(conn.request.path)
        assert url.path == f"/snooker/fixtures/{self.fixture_id}/actions", url.path
        start = int(parse_qs(url.query).get("startPosition", ["0"])[0])
        first = json.loads(await conn.recv())
        if first.get("authToken") != self.token:
            await conn.send(json.dumps({"message": "The supplied authentication is invalid"}))
            await conn.close(1008, "authentication failed")
            return
        await conn.send(json.dumps({"message": "Authorisation accepted", "level": "INFO"}))
        if self.junk_then_close is not None:
            self.starts.append(start)
            await conn.send(self.junk_then_close)
            await conn.close(1011, "broken")
            return
        loop = asyncio.get_running_loop()
        if self.stalled_at is not None and self.reconnected_at is None:
            self.reconnected_at = loop.time()
        self.starts.append(start)
        for data, binary in self.after.get(0, []) if start == 0 else []:  # before packet 1
            await conn.send(data, text=not binary)
        beating = asyncio.create_task(self._heartbeats(conn))
        try:
            for position, line in enumerate(self.lines[start:], start + 1):
                if self.pace and position > start + 1:
                    await asyncio.sleep(self.pace)  # the feed's own pace
                await conn.send(self.stamp(line) if self.stamp is not None else line)
                for data, binary in self.after.get(position, []):
                    await conn.send(data, text=not binary)
                if position == self.stall_at and len(self.starts) == 1:
                    beating.cancel()
                    self.stalled_at = loop.time()
                    if self.trickle is not None:
                        with contextlib.suppress(ConnectionClosed):
                            while True:
                                await asyncio.sleep(self.trickle_every)  # the feed's own pace
                                await conn.send(self.trickle, text=True)
                    await conn.wait_closed()  # silent, but pings are answered
                    return
            if self.finished:
                await conn.close()
            else:
                await conn.wait_closed()
        finally:
            beating.cancel()

    async def _heartbeats(self, conn: ServerConnection) -> None:
        if self.heartbeat_every is None:
            return
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(self.heartbeat_every)  # the feed's own pace
                await conn.send(json.dumps({"message": "Heartbeat sent", "level": "INFO"}))
