"""The live simulator's timestamp stamping, against the re.sub it replaced (hypothesis)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from ingest.simulator.connection import _TIMESTAMP, _format_ts, _restamp


def _reference(line: str, start: int, stamp: str) -> str:
    """What the simulator did before: ``re.sub`` with the stamp in the template."""
    return line[:start] + _TIMESTAMP.sub(rf"\g<1>{stamp}\g<2>", line[start:], count=1)


_spaces = st.sampled_from(["", " ", "  ", "\t", "\n "])
_values = st.text(alphabet=st.characters(blacklist_characters='"\\'), max_size=30)


@given(
    before=st.text(max_size=40),
    gap1=_spaces,
    gap2=_spaces,
    old=_values,
    after=st.text(max_size=40),
    second=st.booleans(),
    start=st.integers(0, 60),
)
def test_restamp_is_the_substitution_it_replaced(
    before: str, gap1: str, gap2: str, old: str, after: str, second: bool, start: int
) -> None:
    line = f'{before}"timestamp"{gap1}:{gap2}"{old}"{after}'
    if second:
        line += ', "timestamp": "2020-01-01T00:00:00.000000Z"'
    start = min(start, len(line))
    stamp = _format_ts(1796411966.123456)
    assert _restamp(line, start, stamp) == _reference(line, start, stamp)


def test_restamp_leaves_a_line_without_a_timestamp_alone() -> None:
    line = json.dumps({"fixtureAction": {"id": 1}})
    assert _restamp(line, 0, "x") == line


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_format_ts_is_the_strftime_it_replaced(wall: float) -> None:
    expected = datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert _format_ts(wall) == expected
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", _format_ts(wall))
