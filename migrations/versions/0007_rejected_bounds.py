"""rejected_messages keeps a bounded prefix of each frame, with its length and hash;
fixtures counts the rejected frames not kept at all (beyond the per-fixture rate).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = (
    "ALTER TABLE rejected_messages ADD COLUMN length bigint",
    "ALTER TABLE rejected_messages ADD COLUMN sha256 bytea",
    "UPDATE rejected_messages SET length = octet_length(raw), sha256 = sha256(raw)",
    "ALTER TABLE rejected_messages ALTER COLUMN length SET NOT NULL",
    "ALTER TABLE rejected_messages ALTER COLUMN sha256 SET NOT NULL",
    """
    COMMENT ON TABLE rejected_messages IS 'Frames that are not valid packets, or packets the
    database cannot hold: the first bytes of each (raw, at most 4 KiB), its full length and
    SHA-256, and the reason. At most a burst of 100 per fixture, then one a minute; the others
    are counted in fixtures.rejected_unstored.'
    """,
    "ALTER TABLE fixtures ADD COLUMN rejected_unstored bigint NOT NULL DEFAULT 0",
    """
    COMMENT ON COLUMN fixtures.rejected_unstored IS 'Rejected frames beyond the per-fixture rate:
    counted here, not stored'
    """,
)

DOWNGRADE = (
    "ALTER TABLE fixtures DROP COLUMN rejected_unstored",
    "ALTER TABLE rejected_messages DROP COLUMN sha256",
    "ALTER TABLE rejected_messages DROP COLUMN length",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
