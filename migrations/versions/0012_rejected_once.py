"""fixtures.rejected_unstored counted exactly once: the batch that counted it is remembered.

The rejected frames beyond the per-fixture rate used to be counted by the fixture-state saver,
as a delta: a commit whose reply was lost, then retried, counted them twice. They are now
counted by the writer in the transaction of the batch they came in, and that transaction
writes the batch's token into fixtures.rejected_batch; a retry of the same batch finds its
token there and counts (and stores rejected frames) nothing again.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = (
    "ALTER TABLE fixtures ADD COLUMN rejected_batch uuid",
    """
    COMMENT ON COLUMN fixtures.rejected_batch IS 'The writer''s last batch that stored or counted
    rejected frames of this fixture: a retry of that batch (its commit''s reply lost) finds it
    here and changes nothing'
    """,
    """
    COMMENT ON COLUMN fixtures.rejected_unstored IS 'Rejected frames beyond the per-fixture rate:
    counted here, not stored, exactly once, in the transaction of the batch they came in'
    """,
)

DOWNGRADE = (
    """
    COMMENT ON COLUMN fixtures.rejected_unstored IS 'Rejected frames beyond the per-fixture rate:
    counted here, not stored'
    """,
    "ALTER TABLE fixtures DROP COLUMN rejected_batch",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
