"""One client connection to the simulator: the token check, then packets and heartbeats.

After the token (:func:`authenticate`), a :class:`Connection` runs three tasks: one sends the
recording from the client's position on, paced by its times (or at once for ``speed=fast``),
with the connection's faults; one sends heartbeats; one reads, to answer pings and notice the
client going away.

A fixture served ``--live`` is a :class:`LiveStream`, shared by every connection to it: its
packets happen at fixed moments of a timeline that began when the simulator started, and are
sent stamped with that moment (``fixtureAction.timestamp``), as the real feed stamps what it
sends, less the fixture's ``delay_seconds`` fault. A provider suspension is injected into it:
a Status Updated packet (CollectionSuspended) at the moment it happens, nothing more until it is
lifted, then one saying CollectingLive, the rest of the match held back by the pause. The
injected packets take their place in the numbering, every later packet's ``fixtureSeqNum`` one
further on: a client that reconnects from its ``MAX(seq)`` sees the same stream as one that
stayed connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import socket
import struct
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

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
    last_sent_at: float = 0.0  # wall time of the last packet or heartbeat sent
    first_after_stall_at: float = 0.0  # wall time of the first message sent after a stall
    suspensions: int = 0  # provider suspensions injected


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
        self._stalled = False  # a stall was waited out: the next packet's time is counted

    def start(
        self,
        recording: Recording,
        skip: int,
        *,
        fast: bool,
        started: float,
        live: LiveStream | None = None,
    ) -> set[asyncio.Task[None]]:
        """The connection's tasks; the first to end ends the connection. ``started`` is when
        the simulator started (``time.monotonic()``), the origin of a live timeline; ``live``:
        the fixture's live stream (``--live``, and not ``speed=fast``)."""
        serve = (
            self._serve_live(live, skip)
            if live is not None and not fast
            else self._serve(recording, skip, fast=fast, started=started)
        )
        return {
            asyncio.create_task(self._drain()),  # ends when the client goes away
            asyncio.create_task(self._heartbeats()),
            asyncio.create_task(serve),
        }

    async def stalled(self) -> None:
        """Wait out a stall (no packets, no heartbeats)."""
        remaining = self.stall_until - time.monotonic()
        if remaining > 0:
            self._stalled = True
            await asyncio.sleep(remaining)

    async def _send_packet(self, line: str) -> None:
        await self.ws.send_str(line)
        self.counters.packets_sent += 1
        self._sent()

    def _sent(self) -> None:
        """A packet or a heartbeat went out: the times the betting benchmark reads."""
        counters = self.counters
        counters.last_sent_at = time.time()
        if self._stalled:
            self._stalled = False
            counters.first_after_stall_at = counters.last_sent_at

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
        try:
            for sent, (line, due) in enumerate(
                self._schedule(recording, skip, fast=fast, started=started), 1
            ):
                if due > 0:
                    await asyncio.sleep(due)
                await self.stalled()
                await self._send_packet(line)
                if await self._after_packet(sent):
                    return
            await self._ended(recording)
        except (ConnectionResetError, RuntimeError):
            pass  # the client went away

    async def _serve_live(self, stream: LiveStream, skip: int) -> None:
        """The fixture's live stream from position ``skip`` on: each packet when it happens,
        stamped with that moment (less ``delay_seconds``), re-read after every change of the
        stream (a suspension injected, or lifted)."""
        position, sent = skip, 0
        try:
            while True:
                item = stream.item(position)
                if item is None:
                    break
                line, due, injected = item
                wait = due - time.monotonic()
                if wait > 0:
                    changed = stream.changed
                    with contextlib.suppress(TimeoutError):  # not wait_for: see worker/betting
                        async with asyncio.timeout(None if math.isinf(wait) else wait):
                            await changed.wait()
                    continue  # what is at this position, and when, may have changed
                await self.stalled()
                if not injected:
                    line = stream.stamped(line, due, stream.delay())
                await self._send_packet(line)
                position += 1
                sent += 1
                if await self._after_packet(sent):
                    return
            await self._ended(stream.recording)
        except (ConnectionResetError, RuntimeError):
            pass  # the client went away

    async def _after_packet(self, sent: int) -> bool:
        """The faults due after the ``sent``-th packet of this connection; True: it is dropped."""
        faults, counters = self.faults, self.counters
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
            return True
        return False

    async def _ended(self, recording: Recording) -> None:
        if recording.finished:
            await self.ws.close()
        else:
            await asyncio.Future()  # still being played: stay connected, heartbeats go on

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
                self._sent()

    async def _drain(self) -> None:
        """Read (and so answer pings and notice a close) until the client goes away."""
        async for _ in self.ws:
            pass


_TIMESTAMP = re.compile(r'("timestamp"\s*:\s*")[^"]*(")')
_SEQ_NUM = re.compile(r'("fixtureSeqNum"\s*:\s*)(\d+)')
_STATUS_CODES = {"CollectingLive": 2, "CollectionSuspended": 3}


def _format_ts(wall: float) -> str:
    # isoformat, not strftime: the same text (six digits of microseconds), a quarter faster
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def _restamp(line: str, start: int, stamp: str) -> str:
    """The line with the first ``"timestamp"`` at or after ``start`` set to ``stamp``.

    Sliced, not ``re.sub`` with the stamp in its template: a template new at every packet was
    parsed anew every time (a tenth of a live simulator's CPU)."""
    found = _TIMESTAMP.search(line, start)
    if found is None:
        return line
    return f"{line[: found.end(1)]}{stamp}{line[found.start(2) :]}"


@dataclass(frozen=True)
class _Injected:
    after: int  # the recording's packets before it
    line: str
    due: float  # time.monotonic() when it happened


class LiveStream:
    """A fixture being played live, shared by every connection to it (see the module).

    Positions are those of the stream a client sees (``startPosition`` counts them): the
    recording's packets with the injected ones among them. ``due`` times are
    ``time.monotonic()``; a packet held back by a suspension still on is due at infinity.
    """

    def __init__(
        self,
        fixture_id: uuid.UUID,
        recording: Recording,
        options: SimulatorOptions,
        started: float,
        wall_offset: float,
        delay: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.fixture_id = fixture_id
        self.delay = delay  # the fixture's delay_seconds fault now (it may change at run time)
        self.recording = recording
        self.wall_offset = wall_offset  # wall time = monotonic + this, fixed at the start
        self.injected: list[_Injected] = []  # in stream order (by ``after``, then added)
        self.pauses: list[tuple[int, float]] = []  # (after, seconds): suspensions lifted
        self.held: tuple[int, float] | None = None  # a suspension on: (after, since)
        self.changed = asyncio.Event()  # set (and replaced) on every change
        self.numbered = bool(recording.lines) and '"fixtureSeqNum"' in recording.lines[0]
        first = next((t for t in recording.times if t is not None), None)
        dues: list[float] = []
        for at in recording.times:  # as Connection._schedule paces a live recording
            if at is not None and first is not None:
                dues.append(started + (at - first - options.live_offset) / options.time_scale)
            else:
                dues.append(dues[-1] if dues else started)
        self._dues = dues

    def due(self, index: int) -> float:
        """When the recording's packet ``index`` (0-based) happens, its pauses included."""
        if self.held is not None and self.held[0] <= index:
            return math.inf
        return self._dues[index] + sum(s for after, s in self.pauses if after <= index)

    def played(self, now: float) -> int:
        """How many of the recording's packets have happened by ``now``."""
        count = 0
        for index in range(len(self._dues)):
            if self.due(index) > now:
                break
            count += 1
        return count

    def item(self, position: int) -> tuple[str, float, bool] | None:
        """(line, due, injected) at a 0-based stream position, or None past the end."""
        index = position
        for i, injected in enumerate(self.injected):
            at = injected.after + i
            if at == position:
                return injected.line, injected.due, True
            if at > position:
                break
            index -= 1
        if index >= len(self.recording.lines):
            return None
        line = self.recording.lines[index]
        before = sum(1 for injected in self.injected if injected.after <= index)
        if before and self.numbered:
            line = _SEQ_NUM.sub(lambda m: f"{m[1]}{int(m[2]) + before}", line, count=1)
        return line, self.due(index), False

    def served(self, position: int) -> str | None:
        """The packet at a stream position as a connection sends it (once it has happened)."""
        item = self.item(position)
        if item is None:
            return None
        line, due, injected = item
        return line if injected else self.stamped(line, due, self.delay())

    def stamped(self, line: str, due: float, delay: float) -> str:
        """The packet stamped with the moment it happened (less ``delay`` seconds)."""
        if math.isinf(due):
            return line
        start = line.find('"fixtureAction"')
        if start < 0:
            return line
        return _restamp(line, start, _format_ts(due + self.wall_offset - delay))

    def suspend(self, now: float) -> bool:
        """The provider suspends collection now; False when it already has."""
        if self.held is not None:
            return False
        after = self.played(now)
        self.held = (after, now)
        self._inject(after, "CollectionSuspended", now)
        return True

    def resume(self, now: float) -> bool:
        """The provider collects again now; the rest of the match is held back by the pause."""
        if self.held is None:
            return False
        after, since = self.held
        self.held = None
        self.pauses.append((after, now - since))
        self._inject(after, "CollectingLive", now)
        return True

    def _inject(self, after: int, status: str, now: float) -> None:
        position = after + len(self.injected)  # its place in the stream, after the others
        line = self._status_packet(after, position, status, now, self.delay())
        self.injected.append(_Injected(after, line, now))
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    def _status_packet(
        self, after: int, position: int, status: str, now: float, delay: float
    ) -> str:
        """A Status Updated packet, made like the packet before it (fixture, frame, summary)."""
        previous: dict[str, Any] = {}
        if after > 0:
            with contextlib.suppress(ValueError):
                loaded = json.loads(self.recording.lines[after - 1])
                previous = loaded if isinstance(loaded, dict) else {}
        last = previous.get("fixtureAction")
        last = last if isinstance(last, dict) else {}
        action: dict[str, Any] = {
            "fixtureId": str(self.fixture_id),
            "actionId": str(uuid.uuid5(self.fixture_id, f"simulated-status-{position}")),
        }
        if self.numbered:
            action["fixtureSeqNum"] = position + 1
        action.update(
            {
                "timelineSequence": after + 0.5,
                "timestamp": _format_ts(now + self.wall_offset - delay),
                "period": last.get("period", 0),
                "clockTime": last.get("clockTime", "00:00"),
                "fixtureActionType": "Status Updated",
                "fixtureActionTypeId": 22,
                "sendType": "Confirmed",
                "sendTypeId": 5,
                "relatedFixtureActionIds": [],
                "metadata": {
                    "coverageLevel": 3,
                    "fixtureStatus": 1,
                    "collectionStatus": _STATUS_CODES[status],
                    "collectionStatusReason": (
                        "simulated suspension" if status == "CollectionSuspended" else None
                    ),
                    "collectionStatusReasonCode": 1 if status == "CollectionSuspended" else None,
                },
            }
        )
        summary = previous.get("fixtureSummary")
        summary = dict(summary) if isinstance(summary, dict) else {}
        summary["collectionStatus"] = status
        packet = {
            "traceId": uuid.uuid5(self.fixture_id, f"trace-{position}").hex,
            "version": 3,
            "finished": False,
            "fixtureAction": action,
            "fixtureSummary": summary,
        }
        return json.dumps(packet, separators=(",", ":"))
