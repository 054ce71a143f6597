"""The tables of ingest.db.schema are the tables the migrations make: same columns, in the same
order, with the same types and nullability. The write path's column list and the head revision the
worker checks for are written out (the worker imports neither SQLAlchemy nor alembic); they are
held equal to the schema module and to alembic here, so a migration without the matching change
fails here, not in production."""

from __future__ import annotations

import asyncpg
from sqlalchemy.dialects import postgresql

from ingest.db import schema
from ingest.db.actions import WRITTEN
from ingest.db.migrations import alembic_config, head_revision

_COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind = 'r' AND a.attnum > 0
  AND NOT a.attisdropped AND c.relname <> 'alembic_version'
ORDER BY c.relname, a.attnum
"""


async def test_the_schema_module_matches_the_migrated_database(sql: asyncpg.Connection) -> None:
    migrated: dict[str, list[tuple[str, str, bool]]] = {}
    for table, column, type_, not_null in await sql.fetch(_COLUMNS):
        migrated.setdefault(table, []).append((column, type_, not_null))
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    described = {
        table.name: [
            (c.name, c.type.compile(dialect=dialect).lower(), not c.nullable) for c in table.columns
        ]
        for table in schema.metadata.sorted_tables
    }
    assert described == migrated


def test_the_write_path_writes_every_column_of_actions_with_its_type() -> None:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    expected = tuple(
        (
            c.name,
            "text[]" if c.name == "payload" else c.type.compile(dialect=dialect).lower() + "[]",
        )
        for c in schema.actions.columns
        if c.name != "stored_at"  # stamped by the server
    )
    assert expected == WRITTEN


def test_the_head_revision_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()
