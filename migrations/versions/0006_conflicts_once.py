"""action_conflicts: each differing replay recorded once, however often it is replayed.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = (
    # keep the first of any repeats recorded so far, then forbid new ones
    """
    DELETE FROM action_conflicts c USING action_conflicts d
    WHERE c.fixture_id = d.fixture_id AND c.seq = d.seq
      AND md5(c.payload::text) = md5(d.payload::text) AND c.id > d.id
    """,
    """
    CREATE UNIQUE INDEX action_conflicts_once_idx
    ON action_conflicts (fixture_id, seq, md5(payload::text))
    """,
)

DOWNGRADE = ("DROP INDEX action_conflicts_once_idx",)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
