"""What a frame from the feed is: an action, a control message, or something to reject.

Pure functions, no I/O. Every field is read defensively: unknown fields and missing optional fields
are normal (SPEC section 2), and a field with a value of the wrong type becomes NULL in its typed
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
from typing import Any

import orjson

from ingest.vocabulary import LINEUPS, SEND_TYPES


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


@dataclass(slots=True)
class Rejected:
    """A frame that is not a valid packet: kept with its raw bytes and the reason.

    The store keeps at most the first :data:`REJECTED_KEEP_BYTES` of ``raw``, with its full
    ``length`` and ``sha256``, so a hostile feed cannot fill the disk.
    """

    raw: bytes
    reason: str
    received_at: datetime

    @property
    def length(self) -> int:
        return len(self.raw)

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.raw).digest()


Frame = Action | Control | Rejected


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class InvalidAction(ValueError):
    """A packet with ``fixtureAction`` that cannot be keyed safely (SPEC section 3)."""


def classify(data: bytes, *, binary: bool, position: int, received_at: datetime) -> Frame:
    """Classify one websocket message. Never raises, whatever the bytes.

    ``position`` is the 1-based stream position this packet would have if it is an action
    (``startPosition + i``); it becomes ``seq`` when the packet has no ``fixtureSeqNum``.
    """
    try:
        return _classify(data, binary=binary, position=position, received_at=received_at)
    except Exception as exc:  # a bug here must cost one frame, never the worker
        return Rejected(data, f"cannot read the frame ({type(exc).__name__})", received_at)


def _classify(data: bytes, *, binary: bool, position: int, received_at: datetime) -> Frame:
    if binary:
        return Rejected(data, "binary frame (the feed sends JSON text)", received_at)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(data, f"invalid UTF-8 at byte {exc.start}", received_at)
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as strict:
        # orjson is strict and fast; the standard library takes what orjson does not
        # (integers beyond 64 bits, lone surrogate escapes) and says why it refuses the rest
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except RecursionError:
            return Rejected(data, f"invalid JSON: {strict} (nested too deeply)", received_at)
        except ValueError as exc:
            return Rejected(data, f"invalid JSON: {exc}", received_at)
    if not isinstance(value, dict):
        return Rejected(data, f"not a JSON object but a JSON {_json_kind(value)}", received_at)
    if "fixtureAction" not in value:
        return Control(value)
    try:
        return parse_action(value, text, position=position, received_at=received_at)
    except InvalidAction as exc:
        return Rejected(data, f"invalid action: {exc}", received_at)


def _check_action(fa: object) -> int | None:
    """The packet's ``fixtureSeqNum`` if its ``fixtureAction`` is a valid action, else raise.

    Valid: an object whose ``fixtureSeqNum``, when present, is a positive integer (not a bool,
    float, string or null), and whose ``actionId`` is a non-empty string. A packet numbered by
    the provider is identified by its number, so ``actionId`` may be missing there (the
    provider's own Status Updated sample has none); a packet keyed by its stream position must
    have one.
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
    if action_id is None and seq_num is None:
        raise InvalidAction("no actionId and no fixtureSeqNum: nothing identifies the packet")
    if action_id is not None and not (isinstance(action_id, str) and action_id.strip()):
        raise InvalidAction(
            f"actionId must be a non-empty string, not {_describe_value(action_id)}"
        )
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
    return Action(
        seq=seq_num if seq_num is not None else position,
        payload=text,
        received_at=received_at,
        finished=finished,
        action_id=_uuid(fa.get("actionId")),
        packet_fixture_id=_uuid(fa.get("fixtureId")),
        fixture_seq_num=seq_num,
        type_id=type_id,
        type_name=_str(fa.get("fixtureActionType")),
        subtype_id=_int(fa.get("fixtureActionSubTypeId"), _INT32),
        subtype_name=_str(fa.get("fixtureActionSubType")),
        send_type_id=send_type_id,
        send_type=send_type,
        period=_int(fa.get("period"), _INT32),
        provider_ts=_timestamp(fa.get("timestamp")),
        timeline_sequence=_float(fa.get("timelineSequence")),
        team_id=_uuid(_get(fa.get("team"), "id")),
        player_id=_uuid(_get(fa.get("player"), "id")),
        lineup=lineup,
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


def _uuid(value: object) -> str | None:
    """A UUID as canonical lower-case text, or None when it is not one."""
    if not isinstance(value, str):
        return None
    if _CANONICAL_UUID.fullmatch(value):
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
