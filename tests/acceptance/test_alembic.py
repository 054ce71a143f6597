"""``alembic`` run by hand, as the README tells developers: from the repository root, with
INGEST_DATABASE_URL set, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg

from ingest.db.migrations import head_revision
from tests.acceptance.test_cli import Done, cli, cli_env
from tests.conftest import plain

ROOT = Path(__file__).resolve().parents[2]
ALEMBIC = Path(sys.executable).with_name("alembic")


async def alembic(*args: str, env: dict[str, str]) -> Done:
    proc = await asyncio.create_subprocess_exec(
        ALEMBIC, *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return Done(proc.returncode, out.decode(), err.decode())


async def revision(url: str) -> str | None:
    conn = await asyncpg.connect(plain(url))
    try:
        if not await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL"):
            return None
        return await conn.fetchval("SELECT version_num FROM alembic_version")  # type: ignore[no-any-return]
    finally:
        await conn.close()


async def test_alembic_upgrade_head_and_downgrade_by_hand(empty_database_url: str) -> None:
    env = cli_env(INGEST_DATABASE_URL=empty_database_url)
    up = await alembic("upgrade", "head", env=env)
    assert up.code == 0, up.stderr
    assert await revision(empty_database_url) == head_revision()

    down = await alembic("downgrade", "-1", env=env)
    assert down.code == 0, down.stderr
    after = await revision(empty_database_url)
    assert after is not None and after != head_revision()

    again = await alembic("upgrade", "head", env=env)
    assert again.code == 0, again.stderr
    assert await revision(empty_database_url) == head_revision()


async def test_alembic_by_hand_without_a_database_url_says_what_to_set() -> None:
    done = await alembic("upgrade", "head", env=cli_env())
    assert done.code != 0
    assert "INGEST_DATABASE_URL" in done.stderr
    assert "Traceback" not in done.stderr


async def test_migrate_in_an_environment_with_revision_and_downgrade_keeps_the_schema(
    database_url: str,
) -> None:
    # a service's environment that exports its build revision must not drop the schema
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_REVISION="base", INGEST_DOWNGRADE="1")
    done = await cli("migrate", env=env)
    assert done.code == 0, done.stderr
    assert await revision(database_url) == head_revision()
