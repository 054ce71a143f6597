from __future__ import annotations

import asyncpg
import pytest

from ingest.db.store import Store
from ingest.errors import SchemaError
from tests.conftest import plain

TABLES = {"actions", "fixtures", "rejected_messages", "action_conflicts"}


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(plain(url))
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version'"
        )
    finally:
        await conn.close()
    return {r["tablename"] for r in rows}


async def test_upgrade_downgrade_upgrade(empty_database_url: str) -> None:
    store = Store.connect(empty_database_url)
    try:
        await store.migrate()
        assert await store.schema_revision() == Store.head_revision()
        assert await _tables(empty_database_url) >= TABLES

        await store.migrate("base", downgrade=True)
        assert await store.schema_revision() is None
        assert await _tables(empty_database_url) == set()

        await store.migrate()
        await store.check_schema()
        assert await _tables(empty_database_url) >= TABLES
    finally:
        await store.close()


async def test_check_schema_refuses_an_empty_database(empty_database_url: str) -> None:
    store = Store.connect(empty_database_url)
    try:
        with pytest.raises(SchemaError, match="ingest migrate"):
            await store.check_schema()
    finally:
        await store.close()


async def test_actions_columns_match_the_contract(sql: asyncpg.Connection) -> None:
    rows = await sql.fetch(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'actions'"
    )
    columns = {r["column_name"]: r["data_type"] for r in rows}
    assert columns["fixture_id"] == "uuid"
    assert columns["seq"] == "bigint"
    assert columns["payload"] == "jsonb"
    assert columns["received_at"] == "timestamp with time zone"
    typed = {"action_id", "action_type_id", "action_type", "send_type_id", "period", "provider_ts"}
    typed |= {"fixture_seq_num", "finished", "team_id", "player_id"}
    assert typed <= set(columns)
    pk = await sql.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'actions'::regclass AND contype = 'p'"
    )
    assert pk == "PRIMARY KEY (fixture_id, seq)"
