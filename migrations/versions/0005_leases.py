"""Leases: several workers share the fixtures through PostgreSQL, with no other coordinator.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = (
    "ALTER TABLE fixtures ADD COLUMN owner text",
    "ALTER TABLE fixtures ADD COLUMN lease_expires_at timestamptz",
    "ALTER TABLE fixtures ADD COLUMN lease_version bigint NOT NULL DEFAULT 0",
    """
    COMMENT ON COLUMN fixtures.owner IS 'The worker streaming this fixture (ingest run --all),
    while lease_expires_at is in the future; lease_version counts the claims'
    """,
    "CREATE INDEX fixtures_claimable_idx ON fixtures (lease_expires_at) WHERE enabled AND NOT finished",
    """
    CREATE TABLE workers (
        worker_id     text PRIMARY KEY,
        started_at    timestamptz NOT NULL DEFAULT now(),
        heartbeat_at  timestamptz NOT NULL DEFAULT now(),
        fixtures      integer NOT NULL DEFAULT 0
    )
    """,
    """
    COMMENT ON TABLE workers IS 'Workers sharing the fixtures: alive while heartbeat_at is recent.
    Used to spread claims evenly; a dead worker''s leases simply expire.'
    """,
)

DOWNGRADE = (
    "DROP TABLE workers",
    "DROP INDEX fixtures_claimable_idx",
    "ALTER TABLE fixtures DROP COLUMN lease_version",
    "ALTER TABLE fixtures DROP COLUMN lease_expires_at",
    "ALTER TABLE fixtures DROP COLUMN owner",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
