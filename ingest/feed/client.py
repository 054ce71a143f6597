"""The websocket side: one connection per fixture to the DDE feed.

``FeedSource.stream`` connects to ``{feed}/snooker/fixtures/{id}/actions``, sends the token as the
first message, and yields every action packet and every frame to reject, in order. Control
messages (heartbeats, the auth acknowledgement) keep the connection alive and are not yielded.
aiohttp errors are translated here into :mod:`ingest.errors`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from ingest.errors import (
    AuthError,
    ConfigError,
    FeedUnavailable,
    FixtureNotFound,
    FrameTooLarge,
)
from ingest.feed.packet import Action, Control, Frame, Keying, Rejected, classify
from ingest.settings import Secret
from ingest.worker.ports import Pulse

if TYPE_CHECKING:
    from aiohttp.http import WSMessageNoDecodeText

log = logging.getLogger(__name__)

ACCEPT = "application/vnd.imggaming.dde.api+json;version=1"
AUTH_CLOSE_CODES = frozenset({1008, 4001, 4003, 4401, 4403})
# A packet is a few kilobytes (a best-of-35 summary stays under 20 KiB): this is room to spare,
# and the most a hostile frame can make one connection buffer.
MAX_FRAME_BYTES = 64 * 1024 * 1024


def actions_url(feed_url: str, fixture_id: uuid.UUID) -> str:
    base = feed_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base.removeprefix("https://")
    elif base.startswith("http://"):
        base = "ws://" + base.removeprefix("http://")
    return f"{base}/snooker/fixtures/{fixture_id}/actions"


def feed_session() -> aiohttp.ClientSession:
    """The HTTP session for feed connections.

    aiohttp's default connector allows 100 connections at once and makes the 101st wait, for
    ever with websockets, which hold theirs: one process follows hundreds of fixtures, so there
    is no limit here (the connection *rate* is limited by the worker instead).
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
        # no session-wide deadline: aiohttp's default (300 s in all) would keep a timer armed
        # for the life of every websocket; FeedSource bounds the handshake itself
        timeout=aiohttp.ClientTimeout(total=None),
    )


class FeedSource:
    """Opens feed connections; one instance (and one HTTP session) serves every fixture."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        feed_url: str,
        token: Secret,
        *,
        liveness_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        self._session = session
        self._feed_url = feed_url
        self._token = token
        self._liveness = liveness_timeout
        self._connect_timeout = connect_timeout
        self._max_frame = max_frame_bytes

    def __repr__(self) -> str:
        return f"FeedSource(feed_url={self._feed_url!r}, token=<redacted>)"

    async def stream(
        self,
        fixture_id: uuid.UUID,
        start_position: int,
        *,
        speed: str | None = None,
        on_connected: Callable[[], None] | None = None,
        keying: Keying | None = None,
        pulse: Pulse | None = None,
    ) -> AsyncGenerator[Action | Rejected, None]:
        """Yield the fixture's packets from ``start_position`` on, and the frames to reject, until
        the connection ends or the caller stops (the caller decides what ``finished`` ends).

        ``keying`` is the fixture's :class:`Keying` (a fresh one when None): packets it turns
        away are yielded as rejected, and do not count as signs of life.

        ``pulse``: the caller's :class:`~ingest.worker.ports.Pulse`, on which the liveness
        deadline is kept: ``pulse.at`` is when the last sign of life arrived (a packet or a
        control message, heartbeats included, which are not yielded), in the loop's clock, and
        the time of the connection's start until one has. Reading it costs the worker nothing
        per message: the loop sets it anyway.

        The stream is read by one task, the one that starts it (the liveness timer cancels that
        task's wait when the feed goes silent).

        Raises :class:`AuthError` when the token is refused, :class:`ConfigError` when the
        feed rejects the request itself (HTTP 400, unknown fixture), and :class:`FeedUnavailable`
        for everything worth a retry (network errors, 5xx, abnormal closes, silence).

        Connecting and authenticating are steps of their own (:meth:`_connect`,
        :meth:`_authenticate`), as are control messages (:func:`_handle_control`) and the end of
        the connection (:meth:`_ended`). What is left is the loop every message goes through:
        wait with the liveness deadline, classify, key, yield. It stays in this one function, on
        local variables, because it is the per-message hot path: a call or an awaited coroutine
        per message for any of its steps costs CPU that ``bench.read_path`` measures.
        """
        ws = await self._connect(fixture_id, start_position, speed)
        async with ws:
            await self._authenticate(ws)
            authenticated = False
            position = start_position
            keying = keying or Keying()
            keying.begin(start_position)
            # Liveness counts packets and control messages only. A pong restarts aiohttp's own
            # receive timeout, so a stalled feed whose websocket layer still answers pings would
            # never time out there: the deadline is kept here and moved only by the application.
            pinger = _Pinger(ws)
            live = _Liveness(self._liveness, pulse, pinger)
            # Between messages nothing of the last one is kept (a thousand idle connections
            # would hold a thousand packets): these are let go before every wait.
            msg: WSMessageNoDecodeText | None = None
            data: bytes | None = None
            frame: Frame | None = None
            passed: list[Action | Rejected] | None = None
            item: Action | Rejected | None = None
            try:
                while True:
                    msg = data = frame = passed = item = None
                    live.waiting()
                    try:
                        msg = await ws.receive()
                    except asyncio.CancelledError:
                        if live.expired():
                            raise self._silent() from None
                        raise
                    finally:
                        live.done_waiting()
                    kind = msg.type
                    if kind is not _TEXT and kind is not _BINARY:
                        raise self._ended(msg, ws, position, authenticated)
                    now = datetime.now(UTC)
                    data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
                    frame = classify(
                        data, binary=kind is _BINARY, position=position + 1, received_at=now
                    )
                    if isinstance(frame, Control):
                        live.renew()
                        authenticated = _handle_control(
                            frame, authenticated, self._token, on_connected
                        )
                        continue
                    if not authenticated:  # a feed that sends data without acknowledging
                        authenticated = True
                        if on_connected is not None:
                            on_connected()
                    if isinstance(frame, Rejected):
                        yield frame
                        continue
                    position += 1
                    passed = keying.accept(frame)
                    if keying.holding or _any_action(passed):
                        live.renew()
                    for item in passed:
                        yield item
            finally:
                live.stop()
                pinger.stop()

    async def _connect(
        self, fixture_id: uuid.UUID, start_position: int, speed: str | None
    ) -> aiohttp.ClientWebSocketResponse[Literal[False]]:
        """Open the fixture's websocket: the HTTP handshake and its errors."""
        url = actions_url(self._feed_url, fixture_id)
        params = {"startPosition": str(start_position)}
        if speed:
            params["speed"] = speed
        try:
            # the handshake (TCP, TLS, the upgrade) within connect_timeout: a feed that accepts
            # the connection and never answers is retried like any other network error
            async with asyncio.timeout(self._connect_timeout):
                ws = await self._session.ws_connect(
                    url,
                    params=params,
                    headers={"Accept": ACCEPT, "Connection": "keep-alive, Upgrade"},
                    heartbeat=None,  # the liveness timer pings (see _Liveness)
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0),
                    decode_text=False,
                    max_msg_size=self._max_frame,
                )
        except aiohttp.WSServerHandshakeError as exc:
            raise _handshake_error(exc, url) from None
        except TimeoutError:
            raise FeedUnavailable(
                f"cannot connect to {url}: no answer within {self._connect_timeout:g} s",
                reason="network",
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise FeedUnavailable(
                f"cannot connect to {url}: {_describe(exc)}", reason="network"
            ) from None
        _forget_handshake(ws)
        return ws

    async def _authenticate(self, ws: aiohttp.ClientWebSocketResponse[Literal[False]]) -> None:
        """Send the token as the first message (the feed ignores headers)."""
        try:
            await ws.send_str(json.dumps({"authToken": self._token.reveal()}))
        except (aiohttp.ClientError, OSError) as exc:
            raise FeedUnavailable(
                f"connection lost while authenticating: {exc}", reason="network"
            ) from None

    def _silent(self) -> FeedUnavailable:
        return FeedUnavailable(
            f"no packet or heartbeat for {self._liveness:g} s: connection presumed dead",
            reason="silent",
        )

    def _ended(
        self,
        msg: WSMessageNoDecodeText,
        ws: aiohttp.ClientWebSocketResponse[Literal[False]],
        position: int,
        authenticated: bool,
    ) -> Exception:
        """What to raise for a message that ends the connection (error, close)."""
        kind, data, extra = msg.type, msg.data, msg.extra
        code, exception = ws.close_code, ws.exception()
        if kind is aiohttp.WSMsgType.ERROR:
            error = data if isinstance(data, BaseException) else exception
            if getattr(error, "code", None) == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
                return FrameTooLarge(
                    f"the feed sent a frame over the {self._max_frame:,}-byte limit "
                    f"after position {position} ({error}); it cannot be stored, so "
                    "the fixture cannot get past it",
                    reason="oversized",
                )
            return FeedUnavailable(f"connection error: {_describe(error)}", reason="network")
        # CLOSE / CLOSING / CLOSED
        reason = extra if isinstance(extra, str) and extra else ""
        if code in AUTH_CLOSE_CODES and not authenticated:
            return AuthError(f"the feed refused the access token (close {code} {reason})")
        return FeedUnavailable(
            f"the feed closed the connection (code {code}{', ' + reason if reason else ''})"
            " before the fixture finished",
            reason="closed",
        )


_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


def _forget_handshake(ws: aiohttp.ClientWebSocketResponse[Literal[False]]) -> None:
    """Let go of what aiohttp keeps of the handshake for the life of the connection, for
    nothing once the websocket is open: the response's headers, and the HTTP parser that read
    them (which holds its own lists of the last headers it parsed). About 6 KB of objects a
    connection: a thousand fixtures hold 6 MB of them. An aiohttp without these attributes is
    left as it is."""
    response = getattr(ws, "_response", None)
    if response is not None and hasattr(response, "_raw_headers"):
        response._headers = _NO_HEADERS
        response._raw_headers = ()
        cache = getattr(response, "_cache", None)  # what its properties have handed out
        if isinstance(cache, dict):
            cache.pop("headers", None)
            cache.pop("raw_headers", None)
    protocol: Any = getattr(response, "_protocol", None)
    # once upgraded, the connection's bytes go to the websocket reader and the HTTP parser is
    # never used again (aiohttp reads it only before the upgrade, and skips it when None)
    if getattr(protocol, "_upgraded", False) and getattr(protocol, "_parser", None) is not None:
        protocol._parser = None


_TEXT = aiohttp.WSMsgType.TEXT
_BINARY = aiohttp.WSMsgType.BINARY


def _any_action(frames: list[Action | Rejected]) -> bool:
    # a loop, not any() over a generator expression: a fifth of the cost, once per packet
    for frame in frames:  # noqa: SIM110
        if isinstance(frame, Action):
            return True
    return False


class _Liveness:
    """One connection's liveness deadline, and its websocket pings, watched by a single timer.

    The deadline moves on every sign of life (:meth:`renew`: a float, no timer touched: the time
    of the last one, kept on the caller's :class:`~ingest.worker.ports.Pulse`). The timer is
    armed when the reader starts waiting and nothing is armed: for half the timeout after the
    last sign of life when ``ping`` is given, then for the deadline. When it fires, a pulse that
    moved meanwhile arms it again for the new time; at the half-way point of a silence it calls
    ``ping`` (once per silence) and waits for the deadline; a deadline that has passed while the
    reader waits in ``receive()`` cancels the waiting task, which :meth:`expired` then tells
    apart from any other cancellation (as ``asyncio.timeout`` does, by the task's cancel count):
    the reader raises "silent", and a cancellation from outside (shutdown) still propagates. A
    deadline that passes while the reader is elsewhere (its consumer busy) expires at its next
    wait, unless a message is already buffered then: as with a timeout around each
    ``receive()``, which this replaces at one timer per connection instead of one per message.

    The pings are this timer's rather than aiohttp's ``heartbeat``: aiohttp's moves a timer of its
    own on every message received (a loop callback per message, and a second timer per
    connection), and a pong moves nothing here: liveness is the application's.
    """

    __slots__ = (
        "_armed_for",
        "_cancelling",
        "_fired",
        "_handle",
        "_loop",
        "_ping",
        "_pinged_for",
        "_task",
        "_timeout",
        "_waiting",
        "pulse",
    )

    def __init__(
        self,
        timeout: float,
        pulse: Pulse | None = None,
        ping: Callable[[], None] | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self.pulse = pulse if pulse is not None else Pulse()
        self.pulse.at = self._loop.time()
        self._ping = ping
        self._pinged_for = -math.inf  # the pulse whose silence was pinged
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for = 0.0
        # the task reading the stream: asked once, as asking costs a getpid() system call
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._waiting = False  # in receive()
        self._cancelling = 0  # the task's cancel requests when it started waiting
        self._fired = False

    def renew(self) -> None:
        self.pulse.at = self._loop.time()

    @property
    def deadline(self) -> float:
        return self.pulse.at + self._timeout

    def waiting(self) -> None:
        """The reader is about to wait for a message."""
        self._waiting = True
        self._cancelling = self._task.cancelling()
        if self._handle is None:
            self._arm()

    def done_waiting(self) -> None:
        self._waiting = False

    def expired(self) -> bool:
        """On a cancellation while waiting: was it this timer's, and no one else's?"""
        if not self._fired:
            return False
        self._fired = False
        return self._task.uncancel() <= self._cancelling

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._waiting = False

    def _next(self) -> float:
        """The time the timer is for: this silence's ping, or the deadline."""
        at = self.pulse.at
        if self._ping is not None and self._pinged_for != at:
            return at + self._timeout / 2
        return at + self._timeout

    def _arm(self) -> None:
        self._armed_for = self._next()
        self._handle = self._loop.call_at(self._armed_for, self._fire)

    def _fire(self) -> None:
        self._handle = None
        if self._next() > self._armed_for:  # a sign of life since: wait for the new time
            self._arm()
        elif self._ping is not None and self._pinged_for != self.pulse.at:
            self._pinged_for = self.pulse.at  # half the timeout without a word: a ping
            self._arm()  # first the deadline, which no failing ping may leave unwatched
            self._ping()
        elif self._waiting and not self._fired:
            self._fired = True
            self._task.cancel()
        # else the reader is not waiting: its next wait arms the timer again


class _Pinger:
    """Sends a websocket ping for the liveness timer; at most one in flight, its failure
    swallowed (a connection that cannot take a ping is found dead by the deadline)."""

    __slots__ = ("_sending", "_ws")

    def __init__(self, ws: aiohttp.ClientWebSocketResponse[Literal[False]]) -> None:
        self._ws = ws
        self._sending: asyncio.Task[None] | None = None

    def __call__(self) -> None:
        if self._sending is None and not self._ws.closed:
            self._sending = asyncio.ensure_future(self._ws.ping())
            self._sending.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending = None
        if not task.cancelled():
            task.exception()  # retrieved: a lost connection shows at the next receive

    def stop(self) -> None:
        if self._sending is not None:
            self._sending.cancel()


_SHOWN_CHARS = 300


def _shown(frame: Control, token: Secret) -> str:
    """What a log line or an error may show of a control message: bounded (a hostile feed must
    not write megabytes into the log), and never the token, should the feed echo it."""
    # never str() of the message itself: it may be nested too deeply to print
    text = frame.text or "a message without text, keys: " + ", ".join(
        key[:40] for key in list(frame.message)[:10]
    )
    secret = token.reveal()
    if secret:
        text = text.replace(secret, "***")
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + f"... ({len(text)} chars)"


def _handle_control(
    frame: Control,
    authenticated: bool,
    token: Secret,
    on_connected: Callable[[], None] | None,
) -> bool:
    """Act on a control message; whether the connection is authenticated now (``on_connected``
    is called when the acknowledgement makes it so)."""
    if frame.is_heartbeat:
        return authenticated
    if frame.is_auth_accepted:
        log.debug("authorisation accepted")
        if not authenticated and on_connected is not None:
            on_connected()
        return True
    if frame.is_auth_refused:
        raise AuthError(f"the feed refused the access token: {_shown(frame, token)}")
    if frame.is_error:
        log.warning("feed error message: %s", _shown(frame, token))
    else:
        log.debug("control message: %s", _shown(frame, token))
    return authenticated


def _handshake_error(exc: aiohttp.WSServerHandshakeError, url: str) -> Exception:
    status, message = exc.status, exc.message
    if status == 400:
        return ConfigError(f"the feed rejected the request (HTTP 400 {message}) for {url}")
    if status in (401, 403):
        return AuthError(f"the feed refused the access token (HTTP {status} {message})")
    if status == 404:
        return FixtureNotFound(f"the feed does not know {url} (HTTP 404): check the fixture id")
    return FeedUnavailable(f"the feed answered HTTP {status} {message} for {url}", reason="http")


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
