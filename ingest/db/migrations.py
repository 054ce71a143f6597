"""The schema's version: alembic, run under an advisory lock so that two processes never migrate
at once. The migrations themselves are in ``migrations/versions`` (in the wheel:
``ingest/_migrations``); :mod:`ingest.db.schema` describes the tables they make.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from ingest.db.engine import Database
from ingest.db.translate import DRIVER_ERRORS, translate
from ingest.errors import SchemaError

_MIGRATION_LOCK = 0x736E6B72  # pg_advisory_xact_lock key: one migration at a time


def migrations_dir() -> Path:
    here = Path(__file__).resolve().parent.parent
    packaged = here / "_migrations"  # where the wheel puts them
    return packaged if packaged.is_dir() else here.parent / "migrations"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return cfg


class Migrations(Database):
    """Bring the schema to a revision, and check that it is at the head."""

    async def migrate(self, revision: str = "head", *, downgrade: bool = False) -> None:
        def run(sync_conn: Connection) -> None:
            sync_conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            cfg = alembic_config()
            cfg.attributes["connection"] = sync_conn
            if downgrade:
                command.downgrade(cfg, revision)
            else:
                command.upgrade(cfg, revision)

        try:
            async with self._engine.begin() as conn:
                await conn.run_sync(run)
        except DRIVER_ERRORS as exc:
            raise translate(exc, "migrating the schema") from exc

    async def schema_revision(self) -> str | None:
        def current(sync_conn: Connection) -> str | None:
            return MigrationContext.configure(sync_conn).get_current_revision()

        try:
            async with self._engine.connect() as conn:
                return await conn.run_sync(current)
        except DRIVER_ERRORS as exc:
            raise translate(exc, "reading the schema version") from exc

    @staticmethod
    def head_revision() -> str:
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert head is not None
        return head

    async def check_schema(self) -> None:
        """Raise :class:`SchemaError` unless the schema is at the head revision."""
        current, head = await self.schema_revision(), self.head_revision()
        if current != head:
            state = "empty" if current is None else f"at revision {current}"
            raise SchemaError(
                f"the database schema is {state}, this version needs {head}: run `ingest migrate`"
            )
