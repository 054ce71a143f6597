"""Every batch says which database server took it, and is written only on the one expected."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from ingest.db.store import Store
from ingest.errors import ServerChanged
from ingest.feed.packet import Action, classify
from ingest.simulator.recording import Recording


def actions(recording: Recording, fixture: uuid.UUID, count: int) -> list[tuple[uuid.UUID, Action]]:
    now = datetime.now(UTC)
    frames = [classify(line.encode(), binary=False, position=i, received_at=now)
              for i, line in enumerate(recording.lines[:count], 1)]  # fmt: skip
    return [(fixture, f) for f in frames if isinstance(f, Action)]


@pytest.mark.parametrize("size", [1, 10, 80], ids=["one packet", "a batch", "a COPY"])
async def test_a_batch_for_another_server_writes_nothing_and_says_so(
    store: Store, sql: asyncpg.Connection, recording: Recording, size: int
) -> None:
    fixture = uuid.uuid4()
    batch = actions(recording, fixture, size + 1)[:size]
    assert (size >= store.copy_at) == (size == 80)
    first = await store.write(batch[:1])
    started = await sql.fetchval("SELECT pg_postmaster_start_time()")
    assert first.server == started  # the identity: this postmaster's start time
    elsewhere = started - timedelta(seconds=1)  # as if the batches before went to another
    with pytest.raises(ServerChanged) as raised:
        await store.write(batch, server=elsewhere)
    assert raised.value.server == started
    assert await sql.fetchval("SELECT count(*) FROM actions WHERE fixture_id = $1", fixture) == 1
    again = await store.write(batch, server=started)  # the expected server: written
    assert again.server == started
    assert await sql.fetchval("SELECT count(*) FROM actions WHERE fixture_id = $1", fixture) == size
