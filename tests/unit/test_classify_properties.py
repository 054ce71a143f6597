"""Frame classification under inputs nobody thought of (hypothesis).

Whatever the feed sends, ``classify`` returns a frame and never raises, and it returns an
:class:`Action` only for a valid action packet (docs/keying.md), checked here by a separate,
deliberately plain reading of the rule.
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ingest.feed.packet import REJECTED_KEEP_BYTES, Action, Control, Rejected, classify

NOW = datetime(2026, 11, 24, tzinfo=UTC)
INT64_MAX = 2**63 - 1

# JSON scalars, including the awkward ones: 2^70, NaN, infinities, lone surrogates, NUL
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**63 - 1, 2**63, 2**64, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(codec=None), max_size=20),  # lone surrogates included
    st.sampled_from(["", "\x00", "\ud800", "a\udfffb", "\U0001f3b1", " "]),
)
trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=20,
)
# what a packet's fixtureAction may hold: the two fields the rule is about, sometimes absent
field_values = st.one_of(trees, st.uuids().map(str))
fixture_actions = st.one_of(
    trees,
    st.fixed_dictionaries(
        {},
        optional={
            "actionId": field_values,
            "fixtureSeqNum": st.one_of(field_values, st.integers(min_value=-3, max_value=10**6)),
            "fixtureActionTypeId": trees,
            "fixtureActionType": trees,
            "sendTypeId": trees,
            "period": trees,
            "timestamp": trees,
            "team": trees,
            "metadata": trees,
        },
    ),
)
packets = st.fixed_dictionaries(
    {"fixtureAction": fixture_actions},
    optional={"finished": trees, "fixtureSummary": trees, "version": trees},
)


def dumps(value: Any) -> bytes:
    """JSON text the way a careless server writes it (NaN included, surrogates escaped)."""
    return json.dumps(value, allow_nan=True).encode()


def decode(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constants)
    except RecursionError:  # deeper than Python's limit, not than orjson's
        return orjson.loads(data)


def is_valid_action(data: bytes) -> bool:
    """docs/keying.md (What a frame is), read independently of ingest.feed.packet."""
    try:
        packet = decode(data)
    except ValueError:  # orjson.JSONDecodeError is one too
        return False
    if not isinstance(packet, dict) or not isinstance(packet.get("fixtureAction"), dict):
        return False
    fa = packet["fixtureAction"]
    numbered = "fixtureSeqNum" in fa
    if numbered and not (
        type(fa["fixtureSeqNum"]) is int and 1 <= fa["fixtureSeqNum"] <= INT64_MAX
    ):
        return False
    action_id = fa.get("actionId")
    if action_id is not None and not isinstance(action_id, str):
        return False
    return numbered or bool(action_id and action_id.strip())  # a number identifies it too


def _no_constants(name: str) -> Any:
    raise ValueError(name)


def check(data: bytes, *, binary: bool = False, position: int = 7) -> None:
    frame = classify(data, binary=binary, position=position, received_at=NOW)
    assert isinstance(frame, Action | Control | Rejected)
    if isinstance(frame, Rejected):
        assert frame.raw == data[:REJECTED_KEEP_BYTES] and frame.reason
        assert frame.length == len(data) and frame.sha256 == hashlib.sha256(data).digest()
        if not frame.reason.startswith("PostgreSQL's jsonb cannot hold"):
            assert not is_valid_action(data), frame.reason  # nothing valid is turned away
        return
    assert not binary
    if isinstance(frame, Control):
        assert isinstance(frame.message, dict) and "fixtureAction" not in frame.message
        frame.text, frame.level, frame.is_heartbeat, frame.is_auth_refused  # noqa: B018
        return
    assert is_valid_action(data), data[:200]
    assert 1 <= frame.seq <= INT64_MAX
    fa = decode(data)["fixtureAction"]
    assert frame.seq == (fa.get("fixtureSeqNum") or position)
    assert frame.payload == data.decode("utf-8")
    for name in ("type_name", "subtype_name", "send_type", "action_id", "team_id", "player_id"):
        value = getattr(frame, name)
        if value is not None:  # text PostgreSQL can hold
            assert "\x00" not in value
            value.encode("utf-8")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.booleans())
def test_arbitrary_bytes(data: bytes, binary: bool) -> None:
    check(data, binary=binary)


@settings(max_examples=300)
@given(st.text(alphabet=st.characters(codec=None), max_size=200))
def test_arbitrary_text_even_with_lone_surrogates(text: str) -> None:
    check(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=300)
@given(trees)
def test_arbitrary_json_trees(tree: Any) -> None:
    check(dumps(tree))


@settings(max_examples=600)
@given(packets, st.integers(min_value=1, max_value=10**6))
def test_packet_shaped_objects_are_actions_only_when_valid(packet: Any, position: int) -> None:
    check(dumps(packet), position=position)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=1, max_value=100_000),
    st.sampled_from(["[", '{"a":']),
    st.booleans(),
)
@example(1_000, "[", True)
@example(1_020, "[", True)
@example(1_030, "[", True)
def test_nesting_to_100000_levels(depth: int, opener: str, inside_a_packet: bool) -> None:
    closer = "]" if opener == "[" else "}"
    tree = opener * depth + "1" + closer * depth
    if inside_a_packet:
        tree = '{"fixtureAction": {"fixtureSeqNum": 5, "deep": ' + tree + "}}"
    check(tree.encode())


@settings(max_examples=5, deadline=None)
@given(st.sampled_from(["x", "\x00", "\u00e9", "\\u0000"]), st.booleans())
def test_megabyte_strings(char: str, as_action_id: bool) -> None:
    big = char * (1024 * 1024)
    field = "actionId" if as_action_id else "fixtureActionType"
    text = '{"fixtureAction": {"fixtureSeqNum": 2, "' + field + '": "' + big + '"}}'
    check(text.encode("utf-8", "surrogatepass"))


def test_the_recursion_limit_is_left_alone() -> None:
    before = sys.getrecursionlimit()
    check(b"[" * 50_000 + b"]" * 50_000)
    assert sys.getrecursionlimit() == before
