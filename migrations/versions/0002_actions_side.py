"""actions.side: the acting team's side ("home"/"away"), filled at insert time from the Lineups.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = (
    "ALTER TABLE actions ADD COLUMN side text CHECK (side IN ('home', 'away'))",
    # rows stored before this revision: derive the side from the fixture's latest Lineups
    """
    UPDATE actions a SET side = CASE a.team_id::text
            WHEN lower(l.payload #>> '{fixtureAction,metadata,home,teamId}') THEN 'home'
            WHEN lower(l.payload #>> '{fixtureAction,metadata,away,teamId}') THEN 'away' END
    FROM (
        SELECT DISTINCT ON (fixture_id) fixture_id, payload FROM actions
        WHERE action_type_id = 3 ORDER BY fixture_id, seq DESC
    ) l
    WHERE a.fixture_id = l.fixture_id AND a.team_id IS NOT NULL
    """,
    "COMMENT ON COLUMN actions.side IS 'home or away: the acting team per the fixture''s Lineups'",
)

DOWNGRADE = ("ALTER TABLE actions DROP COLUMN side",)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
