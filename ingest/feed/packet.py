"""What a frame from the feed is: an action, a control message, or something to reject.

Pure functions, no I/O. Every field is read defensively: unknown fields and missing optional fields
are normal (docs/match.md), and a field with a value of the wrong type becomes NULL in its typed
column while the packet itself is stored as received.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from ingest.feed.vocabulary import LINEUPS, SEND_TYPES


@dataclass(slots=True)
class Action:
    """One action packet, parsed once, with the typed columns the store writes."""

    seq: int
    payload: str  # the packet's JSON text exactly as received
    received_at: datetime
    finished: bool
    action_id: str | None = None  # uuids as canonical lower-case text: cheap to check and bind
    packet_fixture_id: str | None = None
    fixture_seq_num: int | None = None
    type_id: int | None = None
    type_name: str | None = None
    subtype_id: int | None = None
    subtype_name: str | None = None
    send_type_id: int | None = None
    send_type: str | None = None
    period: int | None = None
    provider_ts: datetime | None = None
    timeline_sequence: float | None = None
    team_id: str | None = None
    player_id: str | None = None
    side: str | None = None  # "home" / "away": the team's side per the fixture's Lineups
    lineup: tuple[str | None, str | None] | None = None  # a Lineups packet: (home, away) team ids


@dataclass(slots=True)
class Control:
    """A JSON object without ``fixtureAction``: heartbeat, auth acknowledgement, error."""

    message: dict[str, Any]

    @property
    def text(self) -> str:
        value = self.message.get("message")
        return value if isinstance(value, str) else ""

    @property
    def level(self) -> str:
        value = self.message.get("level")
        return value.upper() if isinstance(value, str) else ""

    @property
    def is_heartbeat(self) -> bool:
        return self.text.lower().startswith("heartbeat")

    @property
    def is_auth_accepted(self) -> bool:
        return "authorisation accepted" in self.text.lower() or (
            "authorization accepted" in self.text.lower()
        )

    @property
    def is_auth_refused(self) -> bool:
        text = self.text.lower()
        code = self.message.get("statusCode", self.message.get("code"))
        return "authentication is invalid" in text or "unauthori" in text or code == 401

    @property
    def is_error(self) -> bool:
        return self.level == "ERROR"


REJECTED_KEEP_BYTES = 4096  # of a rejected frame, the first bytes are kept (with length and hash)


@dataclass(slots=True, frozen=True)
class Rejected:
    """A frame that is not a valid packet, with the reason.

    Only the first :data:`REJECTED_KEEP_BYTES` are kept (``raw``), with the whole frame's
    ``length`` and ``sha256``: a hostile feed can neither fill the disk nor, while the database is
    away and rejected frames queue up, the memory.
    """

    raw: bytes
    reason: str
    received_at: datetime
    length: int
    sha256: bytes

    @classmethod
    def of(cls, data: bytes, reason: str, received_at: datetime) -> Rejected:
        return cls(
            data[:REJECTED_KEEP_BYTES],
            reason,
            received_at,
            len(data),
            hashlib.sha256(data).digest(),
        )


Frame = Action | Control | Rejected


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class InvalidAction(ValueError):
    """A packet with ``fixtureAction`` that cannot be keyed safely (docs/keying.md)."""


def classify(data: bytes, *, binary: bool, position: int, received_at: datetime) -> Frame:
    """Classify one websocket message. Never raises, whatever the bytes.

    ``position`` is the 1-based stream position this packet would have if it is an action
    (``startPosition + i``); it becomes ``seq`` when the packet has no ``fixtureSeqNum``.
    """
    try:
        return _classify(data, binary, position, received_at)
    except Exception as exc:  # a bug here must cost one frame, never the worker
        return Rejected.of(data, f"cannot read the frame ({type(exc).__name__})", received_at)


def _classify(data: bytes, binary: bool, position: int, received_at: datetime) -> Frame:
    if binary:
        return Rejected.of(data, "binary frame (the feed sends JSON text)", received_at)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected.of(data, f"invalid UTF-8 at byte {exc.start}", received_at)
    lenient = False
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as strict:
        lenient = True
        # orjson is strict and fast; the standard library takes what orjson does not
        # (integers beyond 64 bits, lone surrogate escapes) and says why it refuses the rest
        try:
            value = json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)
        except RecursionError:
            return Rejected.of(data, f"invalid JSON: {strict} (nested too deeply)", received_at)
        except ValueError as exc:
            return Rejected.of(data, f"invalid JSON: {exc}", received_at)
    if not isinstance(value, dict):
        return Rejected.of(data, f"not a JSON object but a JSON {_json_kind(value)}", received_at)
    if "fixtureAction" not in value:
        return Control(value)
    unholdable = _unholdable(text, lenient=lenient)
    if unholdable:
        return Rejected.of(data, f"PostgreSQL's jsonb cannot hold {unholdable}", received_at)
    try:
        return parse_action(value, text, position=position, received_at=received_at)
    except InvalidAction as exc:
        return Rejected.of(data, f"invalid action: {exc}", received_at)


_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # an escaped (not a literal) \u0000
_SURROGATE_PAIR = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _unholdable(text: str, *, lenient: bool) -> str | None:
    """What valid JSON PostgreSQL's jsonb refuses: the escape ``\\u0000`` and an unpaired
    surrogate escape (only the standard library's lenient parser lets one through). Refused
    here, such a packet is a rejected frame like any other, under the same rate limit."""
    if "\\" not in text:  # no escape at all, the common case: one memchr, not a 6-byte search
        return None
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        return "the escape \\u0000"
    if lenient and _SURROGATE.search(_SURROGATE_PAIR.sub("", text)):
        return "an unpaired surrogate escape"
    return None


def _parse_int(digits: str) -> int | Decimal:
    """Integers of any length (the standard library refuses more than 4,300 digits)."""
    return int(digits) if len(digits) <= 4000 else Decimal(digits)


def _check_action(fa: object) -> int | None:
    """The packet's ``fixtureSeqNum`` if its ``fixtureAction`` is a valid action, else raise.

    Valid: an object whose ``fixtureSeqNum``, when present, is a positive integer (not a bool,
    float, string or null), and whose ``actionId``, when present, is a string. A packet numbered
    by the provider is identified by its number, so ``actionId`` may be missing there (the
    provider's own Status Updated sample has none); a packet keyed by its stream position must
    have a non-empty one.
    """
    if not isinstance(fa, dict):
        raise InvalidAction(f"fixtureAction is a JSON {_json_kind(fa)}, not an object")
    seq_num: int | None = None
    if "fixtureSeqNum" in fa:
        raw = fa["fixtureSeqNum"]
        if type(raw) is not int or not 1 <= raw < 2**63:
            raise InvalidAction(
                f"fixtureSeqNum must be a positive integer, not {_describe_value(raw)}"
            )
        seq_num = raw
    action_id = fa.get("actionId")
    if action_id is not None and not isinstance(action_id, str):
        raise InvalidAction(f"actionId must be a string, not {_describe_value(action_id)}")
    if seq_num is None and not (action_id and action_id.strip()):
        raise InvalidAction("no fixtureSeqNum and no actionId: nothing identifies the packet")
    return seq_num


def _describe_value(value: object) -> str:
    if isinstance(value, bool | int | float) or value is None:
        shown = json.dumps(value)
        return shown if len(shown) <= 24 else f"a {len(shown)}-digit number"
    if isinstance(value, str):
        return "a string"
    return f"a JSON {_json_kind(value)}"


def parse_action(
    packet: dict[str, Any], text: str, *, position: int, received_at: datetime
) -> Action:
    fa = packet.get("fixtureAction")
    seq_num = _check_action(fa)
    assert isinstance(fa, dict)
    summary = packet.get("fixtureSummary")
    finished = packet.get("finished") is True or (
        isinstance(summary, dict) and summary.get("finished") is True
    )
    type_id = _int(fa.get("fixtureActionTypeId"), _INT32)
    lineup = None
    if type_id == LINEUPS and isinstance(fa.get("metadata"), dict):
        meta = fa["metadata"]
        lineup = (_uuid(_get(meta.get("home"), "teamId")), _uuid(_get(meta.get("away"), "teamId")))
    send_type_id = _int(fa.get("sendTypeId"), _INT16)
    send_type = _str(fa.get("sendType")) or SEND_TYPES.get(send_type_id or 0)
    # positional, in the order of Action's fields: keyword arguments cost three times as much
    # (a micro-second a packet)
    return Action(
        seq_num if seq_num is not None else position,  # seq
        text,  # payload
        received_at,
        finished,
        _uuid(fa.get("actionId")),  # action_id
        _uuid(fa.get("fixtureId")),  # packet_fixture_id
        seq_num,  # fixture_seq_num
        type_id,
        _str(fa.get("fixtureActionType")),  # type_name
        _int(fa.get("fixtureActionSubTypeId"), _INT32),  # subtype_id
        _str(fa.get("fixtureActionSubType")),  # subtype_name
        send_type_id,
        send_type,
        _int(fa.get("period"), _INT32),  # period
        _timestamp(fa.get("timestamp")),  # provider_ts
        _float(fa.get("timelineSequence")),  # timeline_sequence
        _uuid(_get(fa.get("team"), "id")),  # team_id
        _uuid(_get(fa.get("player"), "id")),  # player_id
        None,  # side: the store fills it in from the fixture's Lineups
        lineup,
    )


def _json_kind(value: object) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _get(obj: object, key: str) -> object:
    return obj.get(key) if isinstance(obj, dict) else None


_INT64 = range(-(2**63), 2**63)
_INT32 = range(-(2**31), 2**31)  # integer columns
_INT16 = range(-(2**15), 2**15)  # smallint columns


def _int(value: object, bounds: range = _INT64) -> int | None:
    """An integer that fits its column, or None (never an exception: the packet is kept)."""
    if type(value) is int:  # the common case first: this runs several times per packet
        return value if value in bounds else None
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, str):
            if not value.strip().lstrip("-").isdecimal():
                return None
            number = int(value)
        elif isinstance(value, int | float) and float(value).is_integer():
            number = int(value)
        else:
            return None
    except (ValueError, OverflowError):
        return None
    return number if number in bounds else None


def _float(value: object) -> float | None:
    if type(value) is float:
        return value if math.isfinite(value) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        f = float(value)
    except OverflowError:  # an integer too large for a double
        return None
    return f if math.isfinite(f) else None


def _str(value: object) -> str | None:
    """Text PostgreSQL can hold: no NUL, valid UTF-8 (a lone surrogate escape makes it None)."""
    if type(value) is str:
        if value.isascii():
            return value if "\x00" not in value else value.replace("\x00", "")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return None
        return value.replace("\x00", "")
    return None


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_canonical_uuid = _CANONICAL_UUID.fullmatch


def _uuid(value: object) -> str | None:
    """A UUID as canonical lower-case text, or None when it is not one."""
    if not isinstance(value, str):
        return None
    if _canonical_uuid(value):
        return value
    try:
        return str(uuid.UUID(value))  # upper case, braces, no hyphens ...
    except ValueError:
        return None


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    return ts if ts.tzinfo is not None else None


MAX_SEQ_JUMP = 1_000_000  # a fixtureSeqNum this far beyond the last is not believed


class Keying:
    """How one fixture's packets are keyed (docs/keying.md), decided once, never by a later packet.

    By ``fixtureSeqNum`` when the feed numbers its packets, else by stream position. ``numbered``
    comes from the stored rows (None: nothing stored yet). On a fresh fixture the first packet
    decides; an unnumbered first packet is held back until the next one shows which kind of feed
    this is, so that a stray unnumbered packet cannot take a numbered packet's place. A packet of
    the other kind is rejected, and so is a ``fixtureSeqNum`` more than :data:`MAX_SEQ_JUMP`
    beyond the highest one seen: it would become the resume position, and no later packet would
    ever be fetched.
    """

    def __init__(self, numbered: bool | None = None) -> None:
        self.numbered = numbered
        self._held: Action | None = None
        self._high = 0

    def begin(self, start_position: int) -> None:
        """A new connection from ``start_position`` (a packet held on the last one comes again)."""
        self._held = None
        self._high = start_position

    @property
    def holding(self) -> bool:
        return self._held is not None

    def accept(self, action: Action) -> list[Action | Rejected]:
        """The frames to pass on for this action: none (held back), one, or two."""
        if self.numbered is None:
            if action.fixture_seq_num is None and self._held is None and not action.finished:
                self._held = action
                return []
            self.numbered = action.fixture_seq_num is not None
            if self._held is not None:
                held, self._held = self._held, None
                return [self._check(held), self._check(action)]
        return [self._check(action)]

    def _check(self, action: Action) -> Action | Rejected:
        reason = None
        if self.numbered and action.fixture_seq_num is None:
            reason = (
                "no fixtureSeqNum in a feed that numbers its packets (keyed by position it "
                "could take a real packet's place)"
            )
        elif not self.numbered and action.fixture_seq_num is not None:
            reason = "a fixtureSeqNum in a feed whose packets are keyed by position"
        elif action.seq > self._high + MAX_SEQ_JUMP:
            reason = (
                f"fixtureSeqNum {action.seq} is more than {MAX_SEQ_JUMP:,} beyond the last "
                f"({self._high}): not believed (it would become the resume position)"
            )
        if reason is not None:
            return Rejected.of(
                action.payload.encode(), f"invalid action: {reason}", action.received_at
            )
        if action.seq > self._high:
            self._high = action.seq
        return action
