"""fixtures: the live state of each fixture's connection, for `ingest status` and operators.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = (
    "ALTER TABLE fixtures ADD COLUMN state text",
    "ALTER TABLE fixtures ADD COLUMN state_changed_at timestamptz",
    "ALTER TABLE fixtures ADD COLUMN connects integer NOT NULL DEFAULT 0",
    "ALTER TABLE fixtures ADD COLUMN last_error text",
    """
    COMMENT ON COLUMN fixtures.state IS 'What the worker is doing with the fixture: connecting,
    connected, backing off, finished, stopped (saved every few seconds while it runs)'
    """,
)

DOWNGRADE = (
    "ALTER TABLE fixtures DROP COLUMN last_error",
    "ALTER TABLE fixtures DROP COLUMN connects",
    "ALTER TABLE fixtures DROP COLUMN state_changed_at",
    "ALTER TABLE fixtures DROP COLUMN state",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
