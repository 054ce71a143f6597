"""Schema v1: fixtures, actions, rejected_messages, action_conflicts.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# asyncpg prepares every statement, and a prepared statement holds one command: one per string.
UPGRADE = (
    """
    CREATE TABLE fixtures (
        fixture_id      uuid PRIMARY KEY,
        enabled         boolean NOT NULL DEFAULT true,
        finished        boolean NOT NULL DEFAULT false,
        last_seq        bigint NOT NULL DEFAULT 0,
        packets         bigint NOT NULL DEFAULT 0,
        added_at        timestamptz NOT NULL DEFAULT now(),
        last_packet_at  timestamptz,
        finished_at     timestamptz
    )
    """,
    """
    COMMENT ON TABLE fixtures IS 'The fixture registry and each fixture''s ingest progress
    (last_seq = MAX(actions.seq), packets = rows stored, finished = its finished packet is stored).'
    """,
    """
    CREATE TABLE actions (
        fixture_id         uuid NOT NULL,
        seq                bigint NOT NULL,
        payload            jsonb NOT NULL,
        received_at        timestamptz NOT NULL,
        stored_at          timestamptz NOT NULL DEFAULT now(),
        finished           boolean NOT NULL DEFAULT false,
        action_id          uuid,
        fixture_seq_num    bigint,
        action_type_id     integer,
        action_type        text,
        action_subtype_id  integer,
        action_subtype     text,
        send_type_id       smallint,
        send_type          text,
        period             integer,
        provider_ts        timestamptz,
        timeline_sequence  double precision,
        team_id            uuid,
        player_id          uuid,
        PRIMARY KEY (fixture_id, seq)
    )
    """,
    """
    COMMENT ON TABLE actions IS 'Every action packet exactly once, keyed by (fixture_id, seq).
    payload is the packet as received; the other columns are extracted from it at insert time.'
    """,
    "CREATE INDEX actions_fixture_action_idx ON actions (fixture_id, action_id, seq)",
    """
    CREATE TABLE rejected_messages (
        id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        fixture_id   uuid NOT NULL,
        received_at  timestamptz NOT NULL,
        raw          bytea NOT NULL,
        reason       text NOT NULL
    )
    """,
    """
    COMMENT ON TABLE rejected_messages IS 'Frames that are not JSON objects, or packets the
    database cannot hold, with their raw bytes and the reason. Never dropped.'
    """,
    "CREATE INDEX rejected_messages_fixture_idx ON rejected_messages (fixture_id, received_at)",
    """
    CREATE TABLE action_conflicts (
        id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        fixture_id   uuid NOT NULL,
        seq          bigint NOT NULL,
        payload      jsonb NOT NULL,
        received_at  timestamptz NOT NULL
    )
    """,
    """
    COMMENT ON TABLE action_conflicts IS 'A replayed seq whose payload differs from the stored
    row: the stored row in actions is kept, the newcomer is recorded here for inspection.'
    """,
    "CREATE INDEX action_conflicts_fixture_idx ON action_conflicts (fixture_id, seq)",
)

DOWNGRADE = (
    "DROP TABLE action_conflicts",
    "DROP TABLE rejected_messages",
    "DROP TABLE actions",
    "DROP TABLE fixtures",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
