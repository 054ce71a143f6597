"""The betting status in the database (migration 0010): one event per change whoever writes it,
the provider's suspension written with the packet that carries it (INSERT and COPY), the order
of precedence, NOTIFY betting_status, and the fixture_betting view with no worker running."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from ingest.db.store import Store
from ingest.feed.packet import Action, classify
from ingest.worker.ports import CLOSED, OPEN, Reason, suspended
from tests.conftest import plain, wait_until

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "samples" / "status-updated-suspended.json"
STALE = suspended(Reason.FEED_STALE)
DOWN = suspended(Reason.FEED_DOWN)
PROVIDER = suspended(Reason.PROVIDER_SUSPENDED)


def packet(seq: int, *, type_id: int = 9, finished: bool = False, **body: Any) -> Action:
    value = {
        "finished": finished,
        "fixtureAction": {
            "fixtureSeqNum": seq,
            "actionId": str(uuid.uuid4()),
            "fixtureActionTypeId": type_id,
            **body.pop("action", {}),
        },
        **body,
    }
    frame = classify(
        json.dumps(value).encode(), binary=False, position=seq, received_at=datetime.now(UTC)
    )
    assert isinstance(frame, Action)
    return frame


def collection(seq: int, status: str, *, in_metadata: bool = False) -> Action:
    if in_metadata:
        return packet(seq, type_id=22, action={"metadata": {"collectionStatus": status}})
    return packet(seq, type_id=22, fixtureSummary={"collectionStatus": status})


def sample(seq: int) -> Action:
    """The provider's own suspended packet (a numeric code in the metadata, the text in the
    summary), renumbered."""
    value = json.loads(SAMPLE.read_text())
    value["fixtureAction"]["fixtureSeqNum"] = seq
    frame = classify(
        json.dumps(value).encode(), binary=False, position=seq, received_at=datetime.now(UTC)
    )
    assert isinstance(frame, Action)
    return frame


async def events(sql: asyncpg.Connection, fixture: uuid.UUID) -> list[tuple[str, str | None]]:
    rows = await sql.fetch(
        "SELECT status, reason FROM betting_events WHERE fixture_id = $1 ORDER BY id", fixture
    )
    return [(r[0], r[1]) for r in rows]


async def report(store: Store, fixture: uuid.UUID, betting: Any, **kw: Any) -> Any:
    return await store.report_betting("w1", {fixture: betting}, [fixture], 15, **kw)


async def test_a_change_is_written_once_and_announced(
    store: Store, sql: asyncpg.Connection
) -> None:
    fixture = uuid.uuid4()
    await store.register([fixture])
    heard: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await sql.add_listener("betting_status", lambda *a: heard.put_nowait(json.loads(a[3])))
    await store.write([(fixture, packet(1)), (fixture, packet(2))])
    assert await report(store, fixture, OPEN) == {fixture: OPEN}
    assert await report(store, fixture, OPEN) == {fixture: OPEN}  # a repeat: nothing written
    assert await report(store, fixture, STALE) == {fixture: STALE}
    assert await events(sql, fixture) == [("open", None), ("suspended", "feed_stale")]
    first = await asyncio.wait_for(heard.get(), 5)
    assert first["fixture_id"] == str(fixture) and first["status"] == "open"
    assert first["reason"] is None and first["seq"] == 2  # the last stored seq then
    second = await asyncio.wait_for(heard.get(), 5)
    assert (second["status"], second["reason"]) == ("suspended", "feed_stale")
    assert second["id"] > first["id"]
    assert heard.empty()
    view = (await store.betting([fixture]))[fixture]
    assert (view["status"], view["reason"]) == ("suspended", "feed_stale")


async def test_the_provider_suspension_is_written_with_its_packet_and_comes_first(
    store: Store, sql: asyncpg.Connection
) -> None:
    fixture = uuid.uuid4()
    await store.register([fixture])
    await store.write([(fixture, packet(1))])
    await report(store, fixture, OPEN)
    await store.write([(fixture, packet(2)), (fixture, sample(3)), (fixture, packet(4))])
    assert await events(sql, fixture) == [("open", None), ("suspended", "provider_suspended")]
    assert await sql.fetchval(
        "SELECT seq FROM betting_events WHERE fixture_id = $1 ORDER BY id DESC LIMIT 1", fixture
    ) == 3  # fmt: skip
    # while the provider has suspended collection, the worker's view of the feed waits
    assert await report(store, fixture, OPEN) == {fixture: PROVIDER}
    assert await report(store, fixture, DOWN) == {fixture: PROVIDER}
    await store.write([(fixture, packet(5))])  # a packet that says nothing of collection
    assert await report(store, fixture, OPEN) == {fixture: PROVIDER}
    # collecting again: the suspension is lifted, and opening is the worker's
    await store.write([(fixture, collection(6, "CollectingLive", in_metadata=True))])
    assert await events(sql, fixture) == [("open", None), ("suspended", "provider_suspended")]
    assert await report(store, fixture, OPEN) == {fixture: OPEN}
    assert await events(sql, fixture) == [
        ("open", None), ("suspended", "provider_suspended"), ("open", None),
    ]  # fmt: skip


async def test_a_copied_batch_is_seen_by_the_trigger_as_an_inserted_one(
    store: Store, sql: asyncpg.Connection
) -> None:
    fixture = uuid.uuid4()
    batch = [(fixture, packet(i)) for i in range(1, 100)]
    batch.append((fixture, collection(100, "CollectionSuspended")))
    assert len(batch) >= store.copy_at
    await store.write(batch)
    assert await events(sql, fixture) == [("suspended", "provider_suspended")]
    # suspended and collecting again in one batch: the latest packet decides
    later = [(fixture, collection(101, "CollectingLive"))]
    later += [(fixture, packet(i)) for i in range(102, 170)]
    later += [(fixture, collection(170, "CollectionSuspended")), (fixture, packet(171))]
    later += [(fixture, collection(172, "CollectingLive"))]
    await store.write(later)
    assert await report(store, fixture, OPEN) == {fixture: OPEN}


async def test_a_finished_or_dropped_match_is_closed_for_good(
    store: Store, sql: asyncpg.Connection
) -> None:
    finished, dropped = uuid.uuid4(), uuid.uuid4()
    await store.register([finished, dropped])
    await report(store, finished, OPEN)
    await store.write([(finished, packet(1, finished=True))])
    assert await report(store, finished, OPEN) == {finished: CLOSED}
    assert await report(store, finished, DOWN) == {finished: CLOSED}
    assert await events(sql, finished) == [("open", None), ("closed", None)]
    await store.write(
        [(dropped, packet(1)), (dropped, collection(2, "CollectionDropped", in_metadata=True))]
    )
    assert await events(sql, dropped) == [("closed", None)]
    assert await report(store, dropped, OPEN) == {dropped: CLOSED}
    view = await store.betting([finished, dropped])
    assert {f: v["status"] for f, v in view.items()} == {finished: "closed", dropped: "closed"}


async def test_the_view_suspends_a_fixture_whose_worker_went_quiet_with_no_process_running(
    store: Store, sql: asyncpg.Connection
) -> None:
    quiet, never, done = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await store.register([quiet, never, done])
    await store.write([(done, packet(1, finished=True))])
    # trusted for 1 s: the read below comes well within it, however slow the machine
    await store.report_betting("w1", {quiet: OPEN}, [quiet], 1.0)
    view = (await store.betting([quiet]))[quiet]
    assert (view["status"], view["reason"]) == ("open", None)
    assert view["alive_at"] is not None

    async def silent() -> bool:
        row = await sql.fetchrow(
            "SELECT status, reason FROM fixture_betting WHERE fixture_id = $1", quiet
        )
        return tuple(row) == ("suspended", "worker_silent")

    await wait_until(silent, timeout=5)
    assert await events(sql, quiet) == [("open", None)]  # the view says it, no process needed
    rows = await store.betting([never, done])
    assert (rows[never]["status"], rows[never]["reason"]) == ("suspended", "worker_silent")
    assert (rows[done]["status"], rows[done]["reason"]) == ("closed", None)
    # another worker's statement a second writes it down, and never for fixtures it renews
    own = uuid.uuid4()
    await store.register([own])
    await store.report_betting("w2", {own: OPEN}, [own], 0.3)
    await store.report_betting("w2", {}, [own], 0.3, sweep=True)
    assert await events(sql, quiet) == [("open", None), ("suspended", "worker_silent")]
    assert await events(sql, own) == [("open", None)]


async def test_a_clean_stop_says_so_at_once(store: Store, sql: asyncpg.Connection) -> None:
    fixture = uuid.uuid4()
    await store.register([fixture])
    await report(store, fixture, OPEN)
    await store.leave_betting("w1", [fixture])
    assert await events(sql, fixture) == [("open", None), ("suspended", "worker_silent")]
    assert await report(store, fixture, OPEN) == {fixture: OPEN}  # the next worker


async def test_the_sweep_spares_a_fixture_renewed_meanwhile(store: Store) -> None:
    fixture = uuid.uuid4()
    await store.register([fixture])
    await report(store, fixture, OPEN)
    # a worker_silent for a fixture whose worker confirms it alive is not a change that holds
    result = await store.report_betting(
        "w2", {fixture: suspended(Reason.WORKER_SILENT)}, [], 15, sweep=True
    )
    assert result == {fixture: OPEN}


async def test_two_writers_at_once_never_write_the_same_change_twice_in_a_row(
    database_url: str, sql: asyncpg.Connection
) -> None:
    fixture = uuid.uuid4()
    await sql.execute("INSERT INTO fixtures (fixture_id) VALUES ($1)", fixture)
    # one waits on the other's lock, then sees its change and skips its own
    first = await asyncpg.connect(plain(database_url))
    second = await asyncpg.connect(plain(database_url))
    insert = "INSERT INTO betting_events (fixture_id, status, reason) VALUES ($1, 'open', NULL)"
    try:
        held = first.transaction()
        await held.start()
        await first.execute(insert, fixture)
        waiting = asyncio.create_task(second.execute(insert, fixture))
        await wait_until(
            lambda: sql.fetchval(
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            ),
            timeout=10,
        )
        assert not waiting.done()
        await held.commit()
        assert await asyncio.wait_for(waiting, 10) == "INSERT 0 0"
    finally:
        await first.close()
        await second.close()
    assert await events(sql, fixture) == [("open", None)]

    # and under load: two writers, each alternating changes as fast as it can
    async def writer(seed: int) -> None:
        rng = random.Random(seed)
        conn = await asyncpg.connect(plain(database_url))
        try:
            for _ in range(150):
                status, reason = rng.choice(
                    [("open", None), ("suspended", "feed_stale"), ("suspended", "feed_down")]
                )
                await conn.execute(
                    "INSERT INTO betting_events (fixture_id, status, reason) VALUES ($1, $2, $3)",
                    fixture, status, reason,
                )  # fmt: skip
        finally:
            await conn.close()

    await asyncio.gather(writer(1), writer(2))
    written = await events(sql, fixture)
    assert len(written) > 10
    assert all(a != b for a, b in itertools.pairwise(written))


async def test_the_log_is_append_only(store: Store, sql: asyncpg.Connection) -> None:
    fixture = uuid.uuid4()
    await store.register([fixture])
    await report(store, fixture, OPEN)
    for statement in ("UPDATE betting_events SET status = 'closed'", "DELETE FROM betting_events"):
        try:
            await sql.execute(statement)
        except asyncpg.RaiseError as exc:
            assert "append-only" in str(exc)
        else:
            raise AssertionError(f"{statement} was allowed")
