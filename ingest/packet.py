"""What a frame from the feed is: an action, a control message, or something to reject.

Pure functions, no I/O. Every field is read defensively: unknown fields and missing optional fields
are normal (SPEC section 2), and a field with a value of the wrong type becomes NULL in its typed
column while the packet itself is stored as received.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

LINEUPS = 3  # fixtureActionTypeId of the packet that says which team is home
SEND_TYPES = {
    1: "Pending",
    2: "Updated",
    3: "Cancelled",
    4: "Deleted",
    5: "Confirmed",
    6: "Restored",
}


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
    """A frame that is not a JSON object: kept with its raw bytes and the reason."""

    raw: bytes
    reason: str
    received_at: datetime


Frame = Action | Control | Rejected


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def classify(data: bytes, *, binary: bool, position: int, received_at: datetime) -> Frame:
    """Classify one websocket message.

    ``position`` is the 1-based stream position this packet would have if it is an action
    (``startPosition + i``); it becomes ``seq`` when the packet has no ``fixtureSeqNum``.
    """
    if binary:
        return Rejected(data, "binary frame (the feed sends JSON text)", received_at)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(data, f"invalid UTF-8 at byte {exc.start}", received_at)
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        # orjson is strict and fast; the standard library says why, or takes what orjson does
        # not (integers beyond 64 bits, say)
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except ValueError as exc:
            return Rejected(data, f"invalid JSON: {exc}", received_at)
    if not isinstance(value, dict):
        return Rejected(data, f"not a JSON object but a JSON {_json_kind(value)}", received_at)
    if "fixtureAction" not in value:
        return Control(value)
    try:
        return parse_action(value, text, position=position, received_at=received_at)
    except Exception as exc:  # a bug here must cost one packet's typed columns, not the worker
        return Rejected(data, f"cannot read the packet ({type(exc).__name__}: {exc})", received_at)


def parse_action(
    packet: dict[str, Any], text: str, *, position: int, received_at: datetime
) -> Action:
    fa = packet.get("fixtureAction")
    fa = fa if isinstance(fa, dict) else {}
    seq_num = _int(fa.get("fixtureSeqNum"))
    if seq_num is not None and seq_num < 1:
        seq_num = None
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
    if type(value) is str:
        return value if "\x00" not in value else value.replace("\x00", "")
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
