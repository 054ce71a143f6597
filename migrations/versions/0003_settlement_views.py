"""Settlement and analytics views: action_states, match_results, frame_results, breaks, ...

Every view reads each logical action in its latest state (docs/feed.md: corrections are new
packets with the same actionId) and never fails on odd data: numbers and ids inside ``payload``
are read with the safe casts ``ingest_int`` / ``ingest_uuid`` (NULL when malformed).

The views are built so that ``WHERE fixture_id = ...`` reaches the scans of ``actions``: the
latest state is an anti-join (no later packet of the same action), not a window over all
fixtures, and per-fixture parts are grouped by fixture_id or are LATERAL subqueries, so one
fixture costs index scans of that fixture's rows only.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# asyncpg prepares every statement, and a prepared statement holds one command: one per string.
UPGRADE = (
    # -- indexes ---------------------------------------------------------------------------
    # type-selective reads of one fixture (Frame Ended, Break Ended, pots, fouls, Lineups, ...)
    "CREATE INDEX actions_fixture_type_idx ON actions (fixture_id, action_type_id, seq)",
    # is the fixture finished / dropped: only the finished packet(s) are in it
    "CREATE INDEX actions_finished_idx ON actions (fixture_id, seq) WHERE finished",
    # (the latest state of an action uses actions_fixture_action_idx from 0001)
    # -- safe casts ------------------------------------------------------------------------
    """
    CREATE FUNCTION ingest_int(value text) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT CASE WHEN value ~ '^ *-?[0-9]{1,9}([.]0*)? *$'
                    THEN trunc(value::numeric)::integer END
    $$
    """,
    """
    COMMENT ON FUNCTION ingest_int(text) IS 'The integer in a JSON value (7, 7.0 or "7"); NULL
    when it is anything else or out of range. Used by the views so that odd data never fails.'
    """,
    """
    CREATE FUNCTION ingest_uuid(value text) RETURNS uuid
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT CASE WHEN value ~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$'
                    THEN value::uuid END
    $$
    """,
    """
    COMMENT ON FUNCTION ingest_uuid(text) IS 'The uuid in a JSON string; NULL when malformed.'
    """,
    # -- fixture_lineups -------------------------------------------------------------------
    """
    CREATE VIEW fixture_lineups AS
    SELECT DISTINCT ON (a.fixture_id)
           a.fixture_id,
           ingest_uuid(a.payload #>> '{fixtureAction,metadata,home,teamId}') AS home_team_id,
           ingest_uuid(a.payload #>> '{fixtureAction,metadata,away,teamId}') AS away_team_id,
           ingest_uuid(a.payload #>> '{fixtureAction,metadata,home,playerId}') AS home_player_id,
           ingest_uuid(a.payload #>> '{fixtureAction,metadata,away,playerId}') AS away_player_id,
           a.payload #>> '{fixtureAction,metadata,home,name}' AS home_player,
           a.payload #>> '{fixtureAction,metadata,away,name}' AS away_player,
           a.seq
    FROM actions a
    WHERE a.action_type_id = 3
      AND (a.send_type_id IS NULL OR a.send_type_id NOT IN (3, 4))
      AND NOT EXISTS (SELECT 1 FROM actions n
                      WHERE n.fixture_id = a.fixture_id AND n.action_id = a.action_id
                        AND n.seq > a.seq)
    ORDER BY a.fixture_id, a.seq DESC
    """,
    """
    COMMENT ON VIEW fixture_lineups IS 'Each fixture''s Lineups in effect (the latest one): which
    team and player is home and away, and their names.'
    """,
    # -- action_states ---------------------------------------------------------------------
    """
    CREATE VIEW action_states AS
    SELECT x.fixture_id, x.action_id, x.seq, x.first_seq,
           x.action_type_id, x.action_type, x.action_subtype_id, x.action_subtype,
           x.send_type_id, x.send_type,
           coalesce(x.send_type_id = 1, false) AS provisional,
           coalesce(x.send_type_id NOT IN (3, 4), true) AS effective,
           x.period, x.provider_ts, x.timeline_sequence, x.team_id, x.player_id, x.side,
           x.player_name, x.metadata,
           CASE x.action_type_id
               WHEN 9 THEN coalesce(ingest_int(x.metadata ->> 'points'),
                                    CASE WHEN x.action_subtype_id BETWEEN 1 AND 7
                                         THEN x.action_subtype_id END)
               WHEN 10 THEN ingest_int(x.metadata ->> 'foulPoints')
           END AS points,
           CASE x.action_type_id
               WHEN 9 THEN x.side
               WHEN 10 THEN coalesce(
                   CASE lower(x.metadata ->> 'awardedTo')
                       WHEN 'home' THEN 'home' WHEN 'away' THEN 'away' END,
                   CASE x.side WHEN 'home' THEN 'away' WHEN 'away' THEN 'home' END)
           END AS points_to,
           x.finished, x.received_at, x.payload
    FROM (
        SELECT a.fixture_id, a.action_id, a.seq,
               CASE WHEN a.action_id IS NULL THEN a.seq
                    ELSE (SELECT min(f.seq) FROM actions f
                          WHERE f.fixture_id = a.fixture_id AND f.action_id = a.action_id)
               END AS first_seq,
               a.action_type_id, a.action_type, a.action_subtype_id, a.action_subtype,
               a.send_type_id, a.send_type, a.period, a.provider_ts, a.timeline_sequence,
               a.team_id, a.player_id,
               coalesce(CASE a.team_id WHEN l.home_team_id THEN 'home'
                                       WHEN l.away_team_id THEN 'away' END,
                        a.side) AS side,
               coalesce(a.payload #>> '{fixtureAction,player,name}',
                        CASE a.team_id WHEN l.home_team_id THEN l.home_player
                                       WHEN l.away_team_id THEN l.away_player END) AS player_name,
               a.payload -> 'fixtureAction' -> 'metadata' AS metadata,
               a.finished, a.received_at, a.payload
        FROM actions a
        LEFT JOIN fixture_lineups l ON l.fixture_id = a.fixture_id
        WHERE NOT EXISTS (SELECT 1 FROM actions n
                          WHERE n.fixture_id = a.fixture_id AND n.action_id = a.action_id
                            AND n.seq > a.seq)
    ) x
    """,
    """
    COMMENT ON VIEW action_states IS 'Each logical action (fixture_id, action_id) in its latest
    state: the columns of its packet with the highest seq (an action without action_id is its own
    packet). effective = not Cancelled/Deleted; provisional = still Pending. first_seq orders
    actions in play. points/points_to: a pot''s points to the potter, a foul''s to awardedTo.'
    """,
    # -- frame_results ---------------------------------------------------------------------
    """
    CREATE VIEW frame_results AS
    SELECT p.fixture_id, p.frame_number, p.home_points, p.away_points,
           CASE WHEN p.finished THEN coalesce(
               p.ended_side,
               CASE WHEN p.home_points > p.away_points THEN 'home'
                    WHEN p.away_points > p.home_points THEN 'away' END)
           END AS winner,
           p.finished, p.conceded, p.conceded_by, p.broke_off, p.provisional,
           p.counted_home_points, p.counted_away_points, p.started_at, p.ended_at
    FROM (
        SELECT g.*,
               CASE WHEN g.finished THEN coalesce(g.ended_home_points, g.counted_home_points)
                    ELSE g.counted_home_points END AS home_points,
               CASE WHEN g.finished THEN coalesce(g.ended_away_points, g.counted_away_points)
                    ELSE g.counted_away_points END AS away_points
        FROM (
            SELECT s.fixture_id, s.period AS frame_number,
                   bool_or(s.action_type_id = 7) AS finished,
                   (array_agg(s.side ORDER BY s.seq DESC)
                        FILTER (WHERE s.action_type_id = 7))[1] AS ended_side,
                   (array_agg(ingest_int(s.metadata ->> 'homePoints') ORDER BY s.seq DESC)
                        FILTER (WHERE s.action_type_id = 7))[1] AS ended_home_points,
                   (array_agg(ingest_int(s.metadata ->> 'awayPoints') ORDER BY s.seq DESC)
                        FILTER (WHERE s.action_type_id = 7))[1] AS ended_away_points,
                   coalesce(sum(s.points) FILTER (WHERE s.points_to = 'home'), 0)::integer
                        AS counted_home_points,
                   coalesce(sum(s.points) FILTER (WHERE s.points_to = 'away'), 0)::integer
                        AS counted_away_points,
                   bool_or(s.action_type_id = 14) AS conceded,
                   (array_agg(s.side ORDER BY s.seq DESC)
                        FILTER (WHERE s.action_type_id = 14))[1] AS conceded_by,
                   (array_agg(s.side ORDER BY s.seq)
                        FILTER (WHERE s.action_type_id = 6))[1] AS broke_off,
                   bool_or(s.provisional) AS provisional,
                   min(s.provider_ts) FILTER (WHERE s.action_type_id = 6) AS started_at,
                   max(s.provider_ts) FILTER (WHERE s.action_type_id = 7) AS ended_at
            FROM action_states s
            WHERE s.effective AND s.period >= 1 AND s.action_type_id IN (6, 7, 9, 10, 14)
            GROUP BY s.fixture_id, s.period
        ) g
    ) p
    """,
    """
    COMMENT ON VIEW frame_results IS 'One row per frame (period >= 1) with effective actions.
    Ended frames (an effective Frame Ended): its homePoints/awayPoints and winner. In play: the
    effective pots plus foul points awarded to each side (counted_*), winner NULL.'
    """,
    # -- breaks ----------------------------------------------------------------------------
    """
    CREATE VIEW breaks AS
    SELECT s.fixture_id, s.period AS frame_number, s.side, s.player_id,
           ingest_int(s.metadata ->> 'breakScore') AS break_score,
           s.player_name, s.team_id, s.action_id, s.seq, s.first_seq, s.provider_ts,
           s.provisional, s.metadata -> 'pottedBalls' AS potted_balls
    FROM action_states s
    WHERE s.action_type_id = 11 AND s.effective
    """,
    """
    COMMENT ON VIEW breaks IS 'Every completed break (an effective Break Ended action); in order
    of play by first_seq. Centuries: break_score >= 100.'
    """,
    # -- match_results ---------------------------------------------------------------------
    """
    CREATE VIEW match_results AS
    SELECT k.fixture_id,
           fr.home_frames, fr.away_frames,
           CASE WHEN st.finished AND NOT st.dropped THEN
               CASE WHEN fr.home_frames > fr.away_frames THEN 'home'
                    WHEN fr.away_frames > fr.home_frames THEN 'away' END
           END AS winner,
           st.finished,
           CASE WHEN st.dropped THEN 'dropped'
                WHEN st.finished THEN 'completed'
                WHEN st.started THEN 'in play'
                ELSE 'not started' END AS status,
           mc.best_of,
           (mc.best_of + 1) / 2 AS frames_to_win,
           l.home_player, l.away_player, l.home_player_id, l.away_player_id,
           fr.current_frame, coalesce(fr.provisional, false) AS provisional,
           lp.last_seq, lp.collection_status
    FROM (SELECT fixture_id FROM fixtures UNION SELECT fixture_id FROM actions) k
    LEFT JOIN fixture_lineups l ON l.fixture_id = k.fixture_id
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE f.winner = 'home')::integer AS home_frames,
               count(*) FILTER (WHERE f.winner = 'away')::integer AS away_frames,
               max(f.frame_number) AS current_frame,
               bool_or(f.provisional) AS provisional
        FROM frame_results f WHERE f.fixture_id = k.fixture_id
    ) fr
    CROSS JOIN LATERAL (
        -- scalar LIMIT 1 lookups (not EXISTS, which may become a hashed subplan over every
        -- fixture's rows): one index probe of this fixture each
        SELECT coalesce((SELECT true FROM actions d
                         WHERE d.fixture_id = k.fixture_id AND d.finished LIMIT 1), false)
                   AS finished,
               coalesce((SELECT true FROM actions d
                         WHERE d.fixture_id = k.fixture_id AND d.finished
                           AND 'CollectionDropped' IN (
                               d.payload #>> '{fixtureSummary,collectionStatus}',
                               d.payload #>> '{fixtureAction,metadata,collectionStatus}')
                         LIMIT 1), false) AS dropped,
               coalesce((SELECT true FROM actions d
                         WHERE d.fixture_id = k.fixture_id AND d.action_type_id IN (4, 6)
                         LIMIT 1), false) AS started
        OFFSET 0  -- evaluated once per fixture, not once per use of each flag
    ) st
    LEFT JOIN LATERAL (
        SELECT ingest_int(s.metadata ->> 'bestOf') AS best_of
        FROM action_states s
        WHERE s.fixture_id = k.fixture_id AND s.action_type_id = 1 AND s.effective
        ORDER BY s.seq DESC LIMIT 1
    ) mc ON true
    LEFT JOIN LATERAL (
        SELECT a.seq AS last_seq,
               a.payload #>> '{fixtureSummary,collectionStatus}' AS collection_status
        FROM actions a WHERE a.fixture_id = k.fixture_id
        ORDER BY a.seq DESC LIMIT 1
    ) lp ON true
    """,
    """
    COMMENT ON VIEW match_results IS 'One row per fixture (registered or with packets): frames won
    (effective Frame Ended per winning side), winner once finished (NULL while in play or when
    dropped), status completed / dropped / in play / not started, best_of and the players.'
    """,
    # -- player_match_stats ----------------------------------------------------------------
    """
    CREATE VIEW player_match_stats AS
    SELECT l.fixture_id, v.side, v.player_id, v.player_name, v.team_id,
           v.pots, v.fouls, v.points_scored,
           v.highest_break, v.centuries, v.breaks_50_plus, v.breaks, v.frames_won
    FROM fixture_lineups l
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE s.action_type_id = 9 AND s.side = 'home')::integer
                   AS home_pots,
               count(*) FILTER (WHERE s.action_type_id = 9 AND s.side = 'away')::integer
                   AS away_pots,
               count(*) FILTER (WHERE s.action_type_id = 10 AND s.side = 'home')::integer
                   AS home_fouls,
               count(*) FILTER (WHERE s.action_type_id = 10 AND s.side = 'away')::integer
                   AS away_fouls,
               coalesce(sum(s.points) FILTER (WHERE s.points_to = 'home'), 0)::integer
                   AS home_points,
               coalesce(sum(s.points) FILTER (WHERE s.points_to = 'away'), 0)::integer
                   AS away_points
        FROM action_states s
        WHERE s.fixture_id = l.fixture_id AND s.action_type_id IN (9, 10) AND s.effective
    ) sc
    CROSS JOIN LATERAL (
        SELECT max(b.break_score) FILTER (WHERE b.side = 'home') AS home_highest,
               max(b.break_score) FILTER (WHERE b.side = 'away') AS away_highest,
               count(*) FILTER (WHERE b.side = 'home' AND b.break_score >= 100)::integer
                   AS home_centuries,
               count(*) FILTER (WHERE b.side = 'away' AND b.break_score >= 100)::integer
                   AS away_centuries,
               count(*) FILTER (WHERE b.side = 'home' AND b.break_score >= 50)::integer
                   AS home_50s,
               count(*) FILTER (WHERE b.side = 'away' AND b.break_score >= 50)::integer
                   AS away_50s,
               count(*) FILTER (WHERE b.side = 'home')::integer AS home_breaks,
               count(*) FILTER (WHERE b.side = 'away')::integer AS away_breaks
        FROM breaks b WHERE b.fixture_id = l.fixture_id
    ) br
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE f.winner = 'home')::integer AS home_frames,
               count(*) FILTER (WHERE f.winner = 'away')::integer AS away_frames
        FROM frame_results f WHERE f.fixture_id = l.fixture_id
    ) fw
    CROSS JOIN LATERAL (
        VALUES ('home', l.home_player_id, l.home_player, l.home_team_id, sc.home_pots,
                sc.home_fouls, sc.home_points, br.home_highest, br.home_centuries, br.home_50s,
                br.home_breaks, fw.home_frames),
               ('away', l.away_player_id, l.away_player, l.away_team_id, sc.away_pots,
                sc.away_fouls, sc.away_points, br.away_highest, br.away_centuries, br.away_50s,
                br.away_breaks, fw.away_frames)
    ) AS v (side, player_id, player_name, team_id, pots, fouls, points_scored, highest_break,
            centuries, breaks_50_plus, breaks, frames_won)
    """,
    """
    COMMENT ON VIEW player_match_stats IS 'Per fixture and player (home and away per the
    Lineups): effective pots and fouls committed, points scored (pots plus foul points awarded),
    highest break, centuries, 50+ breaks, completed breaks and frames won.'
    """,
)

DOWNGRADE = (
    "DROP VIEW player_match_stats",
    "DROP VIEW match_results",
    "DROP VIEW breaks",
    "DROP VIEW frame_results",
    "DROP VIEW action_states",
    "DROP VIEW fixture_lineups",
    "DROP FUNCTION ingest_uuid(text)",
    "DROP FUNCTION ingest_int(text)",
    "DROP INDEX actions_finished_idx",
    "DROP INDEX actions_fixture_type_idx",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
