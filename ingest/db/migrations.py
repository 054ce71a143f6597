"""The schema's version: alembic, run under an advisory lock so that two processes never migrate
at once. The migrations themselves are in ``migrations/versions`` (in the wheel:
``ingest/_migrations``); :mod:`ingest.db.schema` describes the tables they make.

Only migrating imports alembic and SQLAlchemy (:meth:`Migrations.migrate`, and alembic run by
hand, whose ``migrations/env.py`` connects through :func:`run_on_alembic_connection`). The check
every command makes (:meth:`Migrations.check_schema`) reads ``alembic_version`` with one query
and finds the head revision in the migration files themselves, so a worker starts without
importing either.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.db.engine import Database, connect_arguments, connector
from ingest.db.translate import DRIVER_ERRORS, translate
from ingest.errors import SchemaError

if TYPE_CHECKING:
    from collections.abc import Callable

    from alembic.config import Config
    from sqlalchemy.engine import Connection as SyncConnection

    from ingest.settings import DatabaseTarget

_MIGRATION_LOCK = 0x736E6B72  # pg_advisory_xact_lock key: one migration at a time


def migrations_dir() -> Path:
    here = Path(__file__).resolve().parent.parent
    packaged = here / "_migrations"  # where the wheel puts them
    return packaged if packaged.is_dir() else here.parent / "migrations"


def alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return cfg


_ASSIGNMENT = re.compile(
    r"^(revision|down_revision)\s*(?::[^=\n]*)?=\s*(.+?)\s*(?:#[^\n]*)?$", re.MULTILINE
)


@functools.cache
def head_revision() -> str:
    """The newest revision in our migration files (see :func:`head_of`)."""
    return head_of(migrations_dir() / "versions")


def head_of(versions: Path) -> str:
    """The newest revision in the migration files in ``versions``: the one no other revises.

    Read from each file's top-level ``revision`` and ``down_revision`` assignments (what alembic
    reads, without importing alembic); a test holds it equal to alembic's own answer. Matched
    line by line (parsing the twelve files took 5 ms of every start, before the first feed
    connection); a file where that is ambiguous (a name assigned twice, or such a line that is
    not a literal, as in a docstring) is parsed.
    """
    revisions: dict[str, object] = {}
    for path in sorted(versions.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        found = _assignments(text)
        if "revision" in found:
            revisions[str(found["revision"])] = found.get("down_revision")
    revised: set[object] = set()
    for down in revisions.values():  # a merge revises several: a tuple
        revised.update(down if isinstance(down, tuple | list) else [down])
    heads = set(revisions) - revised
    if len(heads) != 1:
        raise SchemaError(f"the migrations have {len(heads)} heads ({sorted(heads)}), not one")
    return heads.pop()


def _assignments(text: str) -> dict[str, object]:
    matches = _ASSIGNMENT.findall(text)
    names = [name for name, _ in matches]
    if len(names) == len(set(names)):
        try:
            return {name: ast.literal_eval(value) for name, value in matches}
        except (ValueError, SyntaxError):
            pass
    found: dict[str, object] = {}
    for node in ast.parse(text).body:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (
                node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
            )
        )
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
            found[target.id] = ast.literal_eval(value) if value is not None else None
    return found


def lock(sync_conn: SyncConnection) -> None:
    """One migration at a time: a transaction-scoped advisory lock (PgBouncer-safe)."""
    from sqlalchemy import text

    sync_conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})


async def run_on_alembic_connection(
    target: DatabaseTarget, run: Callable[[SyncConnection], None]
) -> None:
    """Run ``run`` on a SQLAlchemy connection (what alembic needs) in one transaction.

    The one way alembic reaches the database, for ``ingest migrate`` and for ``alembic`` run by
    hand (``migrations/env.py``): asyncpg with our connect arguments (and no named prepared
    statements behind a pooler), driver errors translated.
    """
    import sqlalchemy.exc as sa_exc
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    kwargs = connect_arguments(target, None)
    connect = connector(target)
    adapter: dict[str, Any] = {}
    if target.pooler:
        adapter = {"prepared_statement_cache_size": 0, "prepared_statement_name_func": lambda: ""}

    def creator() -> Any:  # what create_async_engine(async_creator=) does, plus `adapter`
        dbapi: Any = engine.sync_engine.dialect.dbapi
        return dbapi.connect(async_creator_fn=lambda: connect(target.dsn, **kwargs), **adapter)

    engine = create_async_engine("postgresql+asyncpg://", creator=creator, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    except (sa_exc.SQLAlchemyError, *DRIVER_ERRORS) as exc:
        raise translate(exc, "migrating the schema") from exc
    finally:
        await engine.dispose()


class Migrations:
    """Bring the schema to a revision, and check that it is at the head (over the store's
    :class:`Database`; migrating itself opens a SQLAlchemy connection of its own)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def migrate(self, revision: str = "head", *, downgrade: bool = False) -> None:
        from alembic import command

        def run(sync_conn: SyncConnection) -> None:
            lock(sync_conn)
            cfg = alembic_config()
            cfg.attributes["connection"] = sync_conn
            if downgrade:
                command.downgrade(cfg, revision)
            else:
                command.upgrade(cfg, revision)

        await run_on_alembic_connection(self._db.target, run)

    async def schema_revision(self) -> str | None:
        """The revision in ``alembic_version``; None when the schema is empty."""
        exists = await self._db.fetch(
            "reading the schema version", "SELECT to_regclass('alembic_version') IS NOT NULL"
        )
        if not exists[0][0]:
            return None
        rows = await self._db.fetch(
            "reading the schema version", "SELECT version_num FROM alembic_version"
        )
        if len(rows) > 1:
            raise SchemaError(
                f"the database schema has {len(rows)} revisions at once: "
                + ", ".join(sorted(r[0] for r in rows))
            )
        return str(rows[0][0]) if rows else None

    @staticmethod
    def head_revision() -> str:
        return head_revision()

    async def check_schema(self) -> None:
        """Raise :class:`SchemaError` unless the schema is at the head revision."""
        current, head = await self.schema_revision(), self.head_revision()
        if current != head:
            state = "empty" if current is None else f"at revision {current}"
            raise SchemaError(
                f"the database schema is {state}, this version needs {head}: run `ingest migrate`"
            )
