"""The columns of ``actions``, written once, as plain data.

Two places need them: :mod:`ingest.db.schema`, which builds the SQLAlchemy table from this list,
and the write path (:mod:`ingest.db.actions`), which builds its ``unnest`` input, its ``INSERT``
list, its one-row statement and its COPY column list from it when it is imported. The write path
runs in ``ingest run``, which does not import SQLAlchemy (a fifth of a second and 25 MB at
start), so the list lives here, where importing it costs nothing.
``tests/integration/test_schema.py`` compares the table built from it with a migrated database.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ColumnSpec:
    """One column: its PostgreSQL type as ``format_type`` prints it, and its constraints."""

    name: str
    type: str
    nullable: bool = True
    primary_key: bool = False
    server_default: str | None = None


_TZ = "timestamp with time zone"

ACTIONS: tuple[ColumnSpec, ...] = (
    ColumnSpec("fixture_id", "uuid", nullable=False, primary_key=True),
    ColumnSpec("seq", "bigint", nullable=False, primary_key=True),
    ColumnSpec("payload", "jsonb", nullable=False),
    ColumnSpec("received_at", _TZ, nullable=False),
    ColumnSpec("stored_at", _TZ, nullable=False, server_default="now()"),
    ColumnSpec("finished", "boolean", nullable=False, server_default="false"),
    ColumnSpec("action_id", "uuid"),
    ColumnSpec("fixture_seq_num", "bigint"),
    ColumnSpec("action_type_id", "integer"),
    ColumnSpec("action_type", "text"),
    ColumnSpec("action_subtype_id", "integer"),
    ColumnSpec("action_subtype", "text"),
    ColumnSpec("send_type_id", "smallint"),
    ColumnSpec("send_type", "text"),
    ColumnSpec("period", "integer"),
    ColumnSpec("provider_ts", _TZ),
    ColumnSpec("timeline_sequence", "double precision"),
    ColumnSpec("team_id", "uuid"),
    ColumnSpec("player_id", "uuid"),
    ColumnSpec("side", "text"),  # 'home' / 'away' from the fixture's Lineups (0002)
)
