"""The tables, defined once (SQLAlchemy Core), as the migrations in ``migrations/versions`` make
them; ``tests/integration/test_schema.py`` compares every table here with a migrated database
(columns, types, nullability), so the two cannot drift.

``actions`` is built from :data:`ingest.db.columns.ACTIONS`, the list of its columns as plain
data, which is also what the write path builds its SQL from (its column lists are never written
out by hand): the worker imports that list, not this module, which would import SQLAlchemy.

The migrations stay the source of the database's shape (alembic's history is fixed): a schema
change is a new migration *and* the matching change here (for ``actions``, in
:mod:`ingest.db.columns`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP, UUID
from sqlalchemy.types import TypeEngine

from ingest.db import columns

metadata = MetaData()

_TZ = TIMESTAMP(timezone=True)

fixtures = Table(
    "fixtures",
    metadata,
    Column("fixture_id", UUID(as_uuid=True), primary_key=True),
    Column("enabled", Boolean, nullable=False, server_default="true"),
    Column("finished", Boolean, nullable=False, server_default="false"),
    Column("last_seq", BigInteger, nullable=False, server_default="0"),
    Column("packets", BigInteger, nullable=False, server_default="0"),
    Column("added_at", _TZ, nullable=False, server_default="now()"),
    Column("last_packet_at", _TZ),
    Column("finished_at", _TZ),
    # the worker's view of the fixture (0004)
    Column("state", Text),
    Column("state_changed_at", _TZ),
    Column("connects", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
    # leases (0005)
    Column("owner", Text),
    Column("lease_expires_at", _TZ),
    Column("lease_version", BigInteger, nullable=False, server_default="0"),
    # rejected frames over the rate, counted only (0007)
    Column("rejected_unstored", BigInteger, nullable=False, server_default="0"),
    Column("rejected_batch", UUID(as_uuid=True)),  # 0012: the last batch that counted them
)

# built from the one list of its columns, which the write path reads without SQLAlchemy
_TYPES: dict[str, TypeEngine[Any]] = {
    "uuid": UUID(as_uuid=True),
    "bigint": BigInteger(),
    "integer": Integer(),
    "smallint": SmallInteger(),
    "boolean": Boolean(),
    "text": Text(),
    "double precision": Double(),
    "jsonb": JSONB(),
    "timestamp with time zone": _TZ,
}
actions = Table(
    "actions",
    metadata,
    *(
        Column(
            c.name,
            _TYPES[c.type],
            primary_key=c.primary_key,
            nullable=c.nullable,
            server_default=c.server_default,
        )
        for c in columns.ACTIONS
    ),
)

rejected_messages = Table(
    "rejected_messages",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("fixture_id", UUID(as_uuid=True), nullable=False),
    Column("received_at", _TZ, nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("reason", Text, nullable=False),
    Column("length", BigInteger, nullable=False),  # 0007
    Column("sha256", LargeBinary, nullable=False),  # 0007
)

action_conflicts = Table(
    "action_conflicts",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("fixture_id", UUID(as_uuid=True), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("received_at", _TZ, nullable=False),
)

workers = Table(
    "workers",
    metadata,
    Column("worker_id", Text, primary_key=True),
    Column("started_at", _TZ, nullable=False, server_default="now()"),
    Column("heartbeat_at", _TZ, nullable=False, server_default="now()"),
    Column("fixtures", Integer, nullable=False, server_default="0"),
)

settlement_events = Table(
    "settlement_events",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("fixture_id", UUID(as_uuid=True), nullable=False),
    Column("market", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("outcome", Text),
    Column("certainty", Text),
    Column("decided_by_seq", BigInteger, nullable=False),
    Column("created_at", _TZ, nullable=False, server_default="now()"),
)

settlement_markets = Table(
    "settlement_markets",
    metadata,
    Column("fixture_id", UUID(as_uuid=True), primary_key=True),
    Column("market", Text, primary_key=True),
    Column("opened_by_seq", BigInteger, nullable=False),
    Column("opened_at", _TZ, nullable=False, server_default="now()"),
)

settlement_checkpoints = Table(
    "settlement_checkpoints",
    metadata,
    Column("fixture_id", UUID(as_uuid=True), primary_key=True),
    Column("seq", BigInteger, nullable=False, server_default="0"),
    Column("updated_at", _TZ, nullable=False, server_default="now()"),
)

# -- stored results (0011) ----------------------------------------------------------------------
# Each stored_<view> holds the rows of the view of that name for the fixtures whose results are
# stored (result_fixtures.stored_at): the same columns, in the same order, with the same types,
# kept by the triggers on actions and refresh_fixture_results() (migration 0011). Written by the
# database itself, never by this package.

_UUID = UUID(as_uuid=True)

result_fixtures = Table(
    "result_fixtures",
    metadata,
    Column("fixture_id", _UUID, primary_key=True),
    Column("stored_at", _TZ),
)

stored_fixture_lineups = Table(
    "stored_fixture_lineups",
    metadata,
    Column("fixture_id", _UUID, primary_key=True),
    Column("home_team_id", _UUID),
    Column("away_team_id", _UUID),
    Column("home_player_id", _UUID),
    Column("away_player_id", _UUID),
    Column("home_player", Text),
    Column("away_player", Text),
    Column("seq", BigInteger),
)

stored_frame_results = Table(
    "stored_frame_results",
    metadata,
    Column("fixture_id", _UUID, primary_key=True),
    Column("frame_number", Integer, primary_key=True),
    Column("home_points", Integer),
    Column("away_points", Integer),
    Column("winner", Text),
    Column("finished", Boolean),
    Column("conceded", Boolean),
    Column("conceded_by", Text),
    Column("broke_off", Text),
    Column("provisional", Boolean),
    Column("counted_home_points", Integer),
    Column("counted_away_points", Integer),
    Column("started_at", _TZ),
    Column("ended_at", _TZ),
)

stored_breaks = Table(
    "stored_breaks",
    metadata,
    Column("fixture_id", _UUID, primary_key=True),
    Column("frame_number", Integer),
    Column("side", Text),
    Column("player_id", _UUID),
    Column("break_score", Integer),
    Column("player_name", Text),
    Column("team_id", _UUID),
    Column("action_id", _UUID),
    Column("seq", BigInteger, primary_key=True),
    Column("first_seq", BigInteger),
    Column("provider_ts", _TZ),
    Column("provisional", Boolean),
    Column("potted_balls", JSONB),
)

stored_match_results = Table(
    "stored_match_results",
    metadata,
    Column("fixture_id", _UUID, primary_key=True),
    Column("home_frames", Integer),
    Column("away_frames", Integer),
    Column("winner", Text),
    Column("finished", Boolean),
    Column("status", Text),
    Column("best_of", Integer),
    Column("frames_to_win", Integer),
    Column("home_player", Text),
    Column("away_player", Text),
    Column("home_player_id", _UUID),
    Column("away_player_id", _UUID),
    Column("current_frame", Integer),
    Column("provisional", Boolean),
    Column("last_seq", BigInteger),
    Column("collection_status", Text),
)

stored_player_match_stats = Table(
    "stored_player_match_stats",
    metadata,
    Column("fixture_id", _UUID, primary_key=True),
    Column("side", Text, primary_key=True),
    Column("player_id", _UUID),
    Column("player_name", Text),
    Column("team_id", _UUID),
    Column("pots", Integer),
    Column("fouls", Integer),
    Column("points_scored", Integer),
    Column("highest_break", Integer),
    Column("centuries", Integer),
    Column("breaks_50_plus", Integer),
    Column("breaks", Integer),
    Column("frames_won", Integer),
)

stored_summary_mismatches = Table(
    "stored_summary_mismatches",
    metadata,
    Column("fixture_id", _UUID, nullable=False),
    Column("seq", BigInteger),
    Column("field", Text),
    Column("ours", Text),
    Column("provider", Text),
)

# betting status (0010)
betting_events = Table(
    "betting_events",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("fixture_id", UUID(as_uuid=True), nullable=False),
    Column("status", Text, nullable=False),
    Column("reason", Text),
    Column("seq", BigInteger, nullable=False),
    Column("at", _TZ, nullable=False, server_default="clock_timestamp()"),
)

betting_fixtures = Table(
    "betting_fixtures",
    metadata,
    Column("fixture_id", UUID(as_uuid=True), primary_key=True),
    Column("status", Text),
    Column("reason", Text),
    Column("since", _TZ),
    Column("seq", BigInteger, nullable=False, server_default="0"),
    Column("event_id", BigInteger),
    Column("provider", Text),
    Column("provider_seq", BigInteger, nullable=False, server_default="0"),
    Column("finished", Boolean, nullable=False, server_default="false"),
    Column("alive_at", _TZ),
    Column("alive_by", Text),
    Column("stale_after", Double, nullable=False, server_default="15"),
)
