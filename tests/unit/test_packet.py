from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.feed.packet import MAX_SEQ_JUMP, Action, Control, Keying, Rejected, classify

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"  # copied from shared/samples
NOW = datetime(2026, 11, 24, tzinfo=UTC)


def frame(data: bytes, *, binary: bool = False, position: int = 1) -> object:
    return classify(data, binary=binary, position=position, received_at=NOW)


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def test_the_provider_sample_is_an_action_with_typed_fields() -> None:
    action = frame(sample("snooker-team-colours.json"), position=99)
    assert isinstance(action, Action)
    assert action.seq == 1  # fixtureSeqNum wins over the stream position
    assert action.type_id == 2 and action.type_name == "Team Colours"
    assert action.send_type_id == 5 and action.send_type == "Confirmed"
    assert action.action_id == "9229c1e6-b0cc-4844-9645-f36a6aa7c9f7"
    assert action.packet_fixture_id == "ad81fac3-a0d5-439a-90f0-98bfba02fe10"
    assert action.provider_ts == datetime(2023, 6, 30, 17, 13, 58, 758681, tzinfo=UTC)
    assert action.period == 0 and not action.finished


def test_a_status_update_sample_is_an_action() -> None:
    action = frame(sample("status-updated-suspended.json"))
    assert isinstance(action, Action)
    assert (action.seq, action.type_id, action.action_id) == (91, 22, None)


def test_control_messages_are_told_apart() -> None:
    lines = sample("control-messages.jsonl").splitlines()
    accepted, heartbeat = (frame(line) for line in lines)
    assert isinstance(accepted, Control) and accepted.is_auth_accepted
    assert isinstance(heartbeat, Control) and heartbeat.is_heartbeat
    refused = frame(b'{"message":"The supplied authentication is invalid","level":"ERROR"}')
    assert isinstance(refused, Control) and refused.is_auth_refused


def test_without_fixtureSeqNum_the_stream_position_is_the_seq() -> None:
    action = frame(b'{"fixtureAction": {"actionId": "x"}}', position=42)
    assert isinstance(action, Action) and action.seq == 42 and action.action_id is None


def test_finished_comes_from_the_packet_or_its_summary() -> None:
    top = frame(b'{"finished": true, "fixtureAction": {"actionId": "a"}}')
    summary = frame(
        b'{"fixtureAction": {"fixtureSeqNum": 9}, "fixtureSummary": {"finished": true}}'
    )
    assert isinstance(top, Action) and top.finished
    assert isinstance(summary, Action) and summary.finished


@pytest.mark.parametrize(
    ("data", "binary", "reason"),
    [
        (b'{"fixtureAction": {}}', True, "binary frame"),
        (b"\xc3\x28 bad utf-8", False, "invalid UTF-8"),
        (b"{not json", False, "invalid JSON"),
        (b'{"a": NaN, "fixtureAction": {}}', False, "invalid JSON"),
        (b"[1, 2]", False, "JSON array"),
        (b'"text"', False, "JSON string"),
        (b"null", False, "JSON null"),
    ],
)
def test_anything_but_a_json_object_is_rejected_with_its_bytes(
    data: bytes, binary: bool, reason: str
) -> None:
    rejected = frame(data, binary=binary)
    assert isinstance(rejected, Rejected)
    assert rejected.raw == data and reason in rejected.reason


def test_uuids_are_canonical_text() -> None:
    upper = str(uuid.uuid4()).upper()
    action = frame(f'{{"fixtureAction": {{"actionId": "{upper}"}}}}'.encode())
    assert isinstance(action, Action) and action.action_id == upper.lower()


def test_integers_beyond_64_bits_are_kept() -> None:
    action = frame(
        b'{"fixtureAction": {"fixtureSeqNum": 3}, "huge": 123456789012345678901234567890}'
    )
    assert isinstance(action, Action) and action.seq == 3


def test_wrongly_typed_fields_become_null_not_errors() -> None:
    action = frame(
        b'{"fixtureAction": {"fixtureSeqNum": 7, "fixtureActionTypeId": true, "period": 1.5,'
        b' "timestamp": "yesterday", "actionId": "A-12", "team": "home", "sendTypeId": 4}}'
    )
    assert isinstance(action, Action)
    assert action.seq == 7
    assert action.type_id is None and action.period is None and action.provider_ts is None
    assert action.action_id is None and action.team_id is None
    assert action.send_type == "Deleted"  # the name follows the documented id


@pytest.mark.parametrize(
    "field",
    [
        b'"period": "\\u00b2"',  # a digit that int() refuses
        b'"period": "--5"',
        b'"timelineSequence": ' + b"9" * 400,  # too large for a double
        b'"fixtureActionTypeId": 3000000000',  # beyond the integer column
        b'"sendTypeId": 40000',  # beyond the smallint column
    ],
)
def test_odd_values_become_null_and_never_raise(field: bytes) -> None:
    action = frame(b'{"fixtureAction": {"actionId": "a", ' + field + b"}}", position=4)
    assert isinstance(action, Action)
    assert action.seq == 4
    assert action.period is None and action.type_id is None and action.send_type_id is None
    assert action.timeline_sequence is None


@pytest.mark.parametrize(
    "fixture_action",
    [
        b'{"action": {}, "fixtureSeqNum": null, "id": null}',  # the packet from the report
        b'{"actionId": "a", "fixtureSeqNum": null}',
        b'{"actionId": "a", "fixtureSeqNum": "abc"}',
        b'{"actionId": "a", "fixtureSeqNum": "7"}',
        b'{"actionId": "a", "fixtureSeqNum": 0}',
        b'{"actionId": "a", "fixtureSeqNum": -5}',
        b'{"actionId": "a", "fixtureSeqNum": 1.5}',
        b'{"actionId": "a", "fixtureSeqNum": 1.0}',
        b'{"actionId": "a", "fixtureSeqNum": true}',
        b'{"actionId": "a", "fixtureSeqNum": 99999999999999999999999}',  # beyond bigint
        b'{"actionId": "a", "fixtureSeqNum": [1]}',
        b"{}",  # nothing identifies it
        b'{"actionId": null}',
        b'{"actionId": 12}',
        b'{"actionId": ""}',
        b'{"actionId": "a", "fixtureSeqNum": 3, "x": 1}'.replace(
            b'"actionId": "a"', b'"actionId": {}'
        ),
        b"[]",
        b'"text"',
        b"null",
    ],
)
def test_an_invalid_action_is_rejected_with_its_reason(fixture_action: bytes) -> None:
    data = b'{"fixtureAction": ' + fixture_action + b', "fixtureSummary": {}}'
    rejected = frame(data, position=1)
    assert isinstance(rejected, Rejected), rejected
    assert rejected.raw == data
    assert rejected.reason.startswith("invalid action: ")


def test_a_numbered_packet_needs_no_action_id() -> None:
    # the provider's own Status Updated sample has none: its number identifies it
    action = frame(b'{"fixtureAction": {"fixtureSeqNum": 91}}', position=5)
    assert isinstance(action, Action) and action.seq == 91 and action.fixture_seq_num == 91


def test_a_deeply_nested_frame_is_rejected_not_raised() -> None:
    for depth in (3_000, 100_000):  # beyond both parsers' limits
        data = b"[" * depth + b"]" * depth
        rejected = frame(data)
        assert isinstance(rejected, Rejected) and "invalid JSON" in rejected.reason
        inside = b'{"fixtureAction": {"actionId": "a", "x": ' + data + b"}}"
        assert isinstance(frame(inside), Rejected)


def test_a_rejected_frame_knows_its_length_and_hash() -> None:
    rejected = frame(b"x" * 10_000)
    assert isinstance(rejected, Rejected)
    assert rejected.length == 10_000
    assert rejected.sha256 == hashlib.sha256(b"x" * 10_000).digest()


def test_what_a_log_shows_of_a_control_message_is_bounded_and_never_the_token() -> None:
    from ingest.feed.client import _shown
    from ingest.settings import Secret

    token = Secret("s3cret-token")
    deep = frame(b'{"level": "ERROR", "x": ' + b"[" * 1000 + b"]" * 1000 + b"}")
    assert isinstance(deep, Control)
    assert _shown(deep, token) == "a message without text, keys: level, x"
    echoed = frame(b'{"message": "bad token s3cret-token ' + b"y" * 5000 + b'"}')
    assert isinstance(echoed, Control)
    shown = _shown(echoed, token)
    assert "s3cret" not in shown and "***" in shown and len(shown) < 400


def test_what_jsonb_cannot_hold_is_rejected_before_the_database() -> None:
    nul = frame(b'{"fixtureAction": {"fixtureSeqNum": 3, "x": "a\\u0000b"}}')
    assert isinstance(nul, Rejected) and "cannot hold the escape \\u0000" in nul.reason
    lone = frame(b'{"fixtureAction": {"fixtureSeqNum": 3, "x": "\\ud800"}}')
    assert isinstance(lone, Rejected) and "unpaired surrogate" in lone.reason
    # a literal backslash before u0000, and a proper surrogate pair, are fine
    assert isinstance(frame(b'{"fixtureAction": {"fixtureSeqNum": 3, "x": "\\\\u0000"}}'), Action)
    assert isinstance(
        frame(b'{"fixtureAction": {"fixtureSeqNum": 3, "x": "\\ud83c\\udfb1"}}'), Action
    )


def test_integers_of_any_length_are_kept() -> None:
    action = frame(b'{"fixtureAction": {"fixtureSeqNum": 3}, "n": ' + b"7" * 5000 + b"}")
    assert isinstance(action, Action) and action.seq == 3


def _action(seq_num: int | None, position: int, *, finished: bool = False) -> Action:
    fields = f'"fixtureSeqNum": {seq_num}' if seq_num is not None else '"actionId": "a"'
    text = f'{{"finished": {str(finished).lower()}, "fixtureAction": {{{fields}}}}}'
    result = frame(text.encode(), position=position)
    assert isinstance(result, Action)
    return result


def test_keying_on_a_fresh_fixture_the_first_packets_decide() -> None:
    numbered = Keying()
    numbered.begin(0)
    assert numbered.accept(_action(None, 1)) == [] and numbered.holding  # held back
    first, second = numbered.accept(_action(1, 2))
    assert isinstance(first, Rejected) and "no fixtureSeqNum" in first.reason
    assert isinstance(second, Action) and second.seq == 1 and numbered.numbered is True

    positional = Keying()
    positional.begin(0)
    assert positional.accept(_action(None, 1)) == []
    one, two = positional.accept(_action(None, 2))
    assert (one.seq, two.seq) == (1, 2) and positional.numbered is False
    (turned_away,) = positional.accept(_action(7, 3))  # never flips the mode
    assert isinstance(turned_away, Rejected) and positional.numbered is False


def test_keying_from_the_stored_rows_holds_nothing_back() -> None:
    keying = Keying(numbered=True)
    keying.begin(10)
    (rejected,) = keying.accept(_action(None, 11))
    assert isinstance(rejected, Rejected) and not keying.holding
    (jump,) = keying.accept(_action(10 + MAX_SEQ_JUMP + 1, 12))
    assert isinstance(jump, Rejected) and "not believed" in jump.reason
    (ok,) = keying.accept(_action(11, 13))
    assert isinstance(ok, Action)


def test_keying_a_lone_finished_packet_is_not_held() -> None:
    keying = Keying()
    keying.begin(0)
    (only,) = keying.accept(_action(None, 1, finished=True))
    assert isinstance(only, Action) and keying.numbered is False
