"""The tables of ingest.db.schema are the tables the migrations make: same columns, in the same
order, with the same types and nullability. The write path derives its column lists from the
schema module, so a migration without the matching change there fails here, not in production."""

from __future__ import annotations

import asyncpg
from sqlalchemy.dialects import postgresql

from ingest.db import schema

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
