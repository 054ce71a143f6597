"""The tables of ingest.db.schema are the tables the migrations make: same columns, in the same
order, with the same types and nullability. The worker imports neither SQLAlchemy nor alembic:
the write path builds its column lists from ingest.db.columns (the list schema.py builds
``actions`` from), and the head revision it checks for is read from the migration files; both
are held to the schema module and to alembic here, so a migration without the matching change
fails here, not in production."""

from __future__ import annotations

import subprocess
import sys

import asyncpg
from sqlalchemy.dialects import postgresql

from ingest.db import columns, schema
from ingest.db.actions import COLUMNS, WRITTEN
from ingest.db.migrations import alembic_config, head_revision
from ingest.feed.packet import Action

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
    assert [name for name, _ in WRITTEN] == COLUMNS


def test_the_write_path_fills_each_column_from_an_action_attribute() -> None:
    from ingest.db import actions

    assert COLUMNS[0] == "fixture_id"  # the batch's, not the action's
    assert len(actions._ATTRIBUTES) == len(COLUMNS) - 1
    assert set(actions._ATTRIBUTES) <= set(Action.__slots__)


def test_the_actions_table_is_built_from_the_one_column_list() -> None:
    assert [c.name for c in schema.actions.columns] == [c.name for c in columns.ACTIONS]
    assert [c.name for c in schema.actions.primary_key] == ["fixture_id", "seq"]


def test_the_write_path_is_built_without_importing_sqlalchemy() -> None:
    code = "import sys, ingest.db.store; print(sorted(m for m in sys.modules if 'sqlalchemy' in m))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_head_revision_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()
