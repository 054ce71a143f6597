"""The worker's fixture ids as the driver's own UUIDs (``Store.fixture_keys``): wherever an id
from the command line meets one read from the database or made by a test, they must be the same
key."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from ingest.db.registry import fixture_keys


@given(st.uuids())
def test_a_key_is_the_same_id_in_every_way_the_worker_uses_one(standard: uuid.UUID) -> None:
    [key] = fixture_keys([standard])
    assert isinstance(key, uuid.UUID)
    assert key == standard and standard == key
    assert (key != standard) is False
    assert hash(key) == hash(standard)
    assert {standard: "stats"}[key] == "stats" and {key: "signs"}[standard] == "signs"
    assert str(key) == str(standard) and key.hex == standard.hex and key.bytes == standard.bytes
    assert f"fixture {key}" == f"fixture {standard}"
    assert fixture_keys([key]) == [key]  # converting again changes nothing


def test_keys_keep_order_and_duplicates() -> None:
    ids = [uuid.uuid4() for _ in range(5)]
    assert fixture_keys([*ids, ids[0]]) == [*ids, ids[0]]
