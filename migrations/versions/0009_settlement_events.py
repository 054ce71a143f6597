"""Settlement events: an append-only log of market changes, the settler's checkpoints, and the
market_results view.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = (
    """
    CREATE TABLE settlement_events (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        fixture_id uuid NOT NULL,
        market text NOT NULL,
        kind text NOT NULL CHECK (kind IN ('settle', 'rollback', 'void', 'rollback_void')),
        outcome text,
        certainty text CHECK (certainty IN ('provisional', 'confirmed')),
        decided_by_seq bigint NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        CHECK ((kind = 'settle') = (outcome IS NOT NULL AND certainty IS NOT NULL))
    )
    """,
    # the same change is never written twice, whatever a settler does
    """
    CREATE UNIQUE INDEX settlement_events_once_idx
    ON settlement_events (fixture_id, market, decided_by_seq, kind)
    """,
    "CREATE INDEX settlement_events_market_idx ON settlement_events (fixture_id, market, id)",
    """
    COMMENT ON TABLE settlement_events IS 'Append-only: one row per change of a market (settle,
    rollback, void, rollback_void), decided by the packet decided_by_seq. Written by ingest
    settle together with its checkpoint, and announced with NOTIFY settlement_events.'
    """,
    # append-only for real: no UPDATE or DELETE (TRUNCATE by an owner remains possible)
    """
    CREATE FUNCTION settlement_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'settlement_events is append-only';
    END
    $$
    """,
    """
    CREATE TRIGGER settlement_events_append_only
    BEFORE UPDATE OR DELETE ON settlement_events
    FOR EACH ROW EXECUTE FUNCTION settlement_events_append_only()
    """,
    """
    CREATE TABLE settlement_markets (
        fixture_id uuid NOT NULL,
        market text NOT NULL,
        opened_by_seq bigint NOT NULL,
        opened_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (fixture_id, market)
    )
    """,
    """
    COMMENT ON TABLE settlement_markets IS 'Every market the settler has seen, from the packet
    that opened it (a match market with the match, frame_winner:n with frame n).'
    """,
    """
    CREATE TABLE settlement_checkpoints (
        fixture_id uuid PRIMARY KEY,
        seq bigint NOT NULL DEFAULT 0,
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    COMMENT ON TABLE settlement_checkpoints IS 'Per fixture, the last packet (seq) whose
    consequences are in settlement_events; advanced in the same transaction as the events.'
    """,
    """
    CREATE VIEW market_results AS
    SELECT m.fixture_id, m.market,
           CASE e.kind WHEN 'settle' THEN 'settled' WHEN 'void' THEN 'void' ELSE 'open' END
               AS status,
           CASE WHEN e.kind = 'settle' THEN e.outcome END AS outcome,
           CASE WHEN e.kind = 'settle' THEN e.certainty END AS certainty,
           CASE WHEN e.kind IN ('settle', 'void') THEN e.created_at END AS settled_at,
           e.decided_by_seq, e.kind AS last_event, m.opened_by_seq
    FROM settlement_markets m
    LEFT JOIN LATERAL (
        SELECT x.kind, x.outcome, x.certainty, x.created_at, x.decided_by_seq
        FROM settlement_events x
        WHERE x.fixture_id = m.fixture_id AND x.market = m.market
        ORDER BY x.id DESC LIMIT 1
    ) e ON true
    """,
    """
    COMMENT ON VIEW market_results IS 'One row per (fixture, market) seen so far: its latest
    event makes it settled (outcome, certainty), void, or open (never decided, or rolled back).
    settled_at: when it was settled or voided.'
    """,
)

DOWNGRADE = (
    "DROP VIEW market_results",
    "DROP TABLE settlement_checkpoints",
    "DROP TABLE settlement_markets",
    "DROP TABLE settlement_events",
    "DROP FUNCTION settlement_events_append_only()",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
