"""Stored results: what the views derive for a finished fixture is kept, not recomputed (#25).

A fixture's results change only with a new packet of that fixture. So, once a fixture has a
finished packet, what the views ``fixture_lineups``, ``frame_results``, ``breaks``,
``match_results``, ``player_match_stats`` and ``summary_mismatches`` show for it is stored in
``stored_<view>`` (the same columns), and each view reads the stored rows of those fixtures and
computes only the others (in play, not started) as before:

    view = stored_<view> UNION ALL (live_<view> for each fixture of live_fixtures)

* ``live_<view>``: the view's definition of migrations 0003 and 0008, word for word (each
  reading the other ``live_`` views): the derivation from the raw packets. It is what gets
  stored, and what the views compute for the fixtures that are not stored.
* ``result_fixtures``: every fixture with packets, and ``stored_at`` when its results are
  stored (NULL: computed live). ``live_fixtures``: the fixtures computed live, those of
  ``result_fixtures`` not stored and the registered ``fixtures`` without a row there (no packets
  yet, or packets written with the triggers off).
* ``refresh_fixture_results(fixture_id)``: brings one fixture's stored rows up to date: deletes
  them, and stores them again if the fixture has a finished packet (true), else leaves it live
  (false). One statement stores the six views' rows, from the same definitions over CTEs of
  that fixture's rows (its action states derived once, not once per view): a best-of-19
  match, about 20-35 ms. ``refresh_fixture_results()``: every fixture (returns the count
  stored).
* Triggers on ``actions``, statement-level (once per batch, for INSERT and COPY alike, with the
  batch's rows as a transition table): each batch locks its fixtures' ``result_fixtures`` rows
  and refreshes, in the same transaction, the fixtures it changes whose results are stored (a
  correction after the end, a late Restored) and those it finishes. A batch of a fixture in
  play costs one statement (a probe and a row lock: 40-60 us of server time). UPDATE and
  DELETE refresh every fixture they touch; TRUNCATE empties the stored tables. A view
  therefore never shows a stale result.

Locking: a refresh holds the fixture's ``result_fixtures`` row (FOR NO KEY UPDATE) and every
batch takes the same lock first, so a refresh never misses the packets of a concurrent batch of
the same fixture (READ COMMITTED: each statement after the lock sees what committed before it).
A transaction at REPEATABLE READ or SERIALIZABLE could not see them: there a refresh only
deletes the stored rows (the fixture is computed live) and stores nothing.

A derivation that fails on odd data (the views are written not to, but a sum can overflow)
never refuses a batch: the fixture is left live (the same error then shows to its readers, as
before this migration) with a WARNING.

A later migration that changes what a view means changes its ``live_`` view and then runs
``SELECT refresh_fixture_results()``.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# -- the definitions of 0003 and 0008, with the views they read prefixed by `p` ----------------
# p = "live_": the derivation from the packets (upgrade); "fx_": over one fixture's CTEs (a
# refresh); "": the views as 0003 and 0008 made them (downgrade).
# tests/integration/test_stored_results.py holds the views to 0003's and 0008's own text.

_PERIODS = """
    SELECT DISTINCT ON (n) n,
           ingest_int(e ->> 'homeTeamScore') AS home_points,
           ingest_int(e ->> 'awayTeamScore') AS away_points,
           lower(e ->> 'winner') AS winner,
           (e -> 'winner') IS NOT NULL AS has_winner,
           CASE lower(e ->> 'isFinished') WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'
           END AS finished
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof({summary} -> 'periods') = 'array'
                                   THEN {summary} -> 'periods' ELSE '[]'::jsonb END) e
    CROSS JOIN LATERAL (SELECT CASE WHEN jsonb_typeof(e) = 'object'
                                    THEN ingest_int(e ->> 'periodNumber') END AS n) k
    WHERE k.n IS NOT NULL
    ORDER BY n
"""


def _fixture_lineups(p: str) -> str:  # reads no other view
    return """
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
    """


def _action_states(p: str) -> str:
    return f"""
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
               coalesce(a.payload #>> '{{fixtureAction,player,name}}',
                        CASE a.team_id WHEN l.home_team_id THEN l.home_player
                                       WHEN l.away_team_id THEN l.away_player END) AS player_name,
               a.payload -> 'fixtureAction' -> 'metadata' AS metadata,
               a.finished, a.received_at, a.payload
        FROM actions a
        LEFT JOIN {p}fixture_lineups l ON l.fixture_id = a.fixture_id
        WHERE NOT EXISTS (SELECT 1 FROM actions n
                          WHERE n.fixture_id = a.fixture_id AND n.action_id = a.action_id
                            AND n.seq > a.seq)
    ) x
    """


def _frame_results(p: str) -> str:
    return f"""
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
            FROM {p}action_states s
            WHERE s.effective AND s.period >= 1 AND s.action_type_id IN (6, 7, 9, 10, 14)
            GROUP BY s.fixture_id, s.period
        ) g
    ) p
    """


def _breaks(p: str) -> str:
    return f"""
    SELECT s.fixture_id, s.period AS frame_number, s.side, s.player_id,
           ingest_int(s.metadata ->> 'breakScore') AS break_score,
           s.player_name, s.team_id, s.action_id, s.seq, s.first_seq, s.provider_ts,
           s.provisional, s.metadata -> 'pottedBalls' AS potted_balls
    FROM {p}action_states s
    WHERE s.action_type_id = 11 AND s.effective
    """


def _match_results(p: str) -> str:
    return f"""
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
    LEFT JOIN {p}fixture_lineups l ON l.fixture_id = k.fixture_id
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE f.winner = 'home')::integer AS home_frames,
               count(*) FILTER (WHERE f.winner = 'away')::integer AS away_frames,
               max(f.frame_number) AS current_frame,
               bool_or(f.provisional) AS provisional
        FROM {p}frame_results f WHERE f.fixture_id = k.fixture_id
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
                               d.payload #>> '{{fixtureSummary,collectionStatus}}',
                               d.payload #>> '{{fixtureAction,metadata,collectionStatus}}')
                         LIMIT 1), false) AS dropped,
               coalesce((SELECT true FROM actions d
                         WHERE d.fixture_id = k.fixture_id AND d.action_type_id IN (4, 6)
                         LIMIT 1), false) AS started
        OFFSET 0  -- evaluated once per fixture, not once per use of each flag
    ) st
    LEFT JOIN LATERAL (
        SELECT ingest_int(s.metadata ->> 'bestOf') AS best_of
        FROM {p}action_states s
        WHERE s.fixture_id = k.fixture_id AND s.action_type_id = 1 AND s.effective
        ORDER BY s.seq DESC LIMIT 1
    ) mc ON true
    LEFT JOIN LATERAL (
        SELECT a.seq AS last_seq,
               a.payload #>> '{{fixtureSummary,collectionStatus}}' AS collection_status
        FROM actions a WHERE a.fixture_id = k.fixture_id
        ORDER BY a.seq DESC LIMIT 1
    ) lp ON true
    """


def _player_match_stats(p: str) -> str:
    return f"""
    SELECT l.fixture_id, v.side, v.player_id, v.player_name, v.team_id,
           v.pots, v.fouls, v.points_scored,
           v.highest_break, v.centuries, v.breaks_50_plus, v.breaks, v.frames_won
    FROM {p}fixture_lineups l
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
        FROM {p}action_states s
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
        FROM {p}breaks b WHERE b.fixture_id = l.fixture_id
    ) br
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE f.winner = 'home')::integer AS home_frames,
               count(*) FILTER (WHERE f.winner = 'away')::integer AS away_frames
        FROM {p}frame_results f WHERE f.fixture_id = l.fixture_id
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
    """


def _summary_mismatches(p: str) -> str:
    return f"""
    SELECT m.fixture_id, l.seq, c.field, c.ours, c.provider
    FROM {p}match_results m
    CROSS JOIN LATERAL (
        SELECT a.seq, a.finished, a.period, a.action_id,
               CASE WHEN jsonb_typeof(a.payload -> 'fixtureSummary') = 'object'
                    THEN a.payload -> 'fixtureSummary' END AS summary
        FROM actions a WHERE a.fixture_id = m.fixture_id
        ORDER BY a.seq DESC LIMIT 1
    ) l
    LEFT JOIN LATERAL (
        SELECT CASE WHEN jsonb_typeof(a.payload -> 'fixtureSummary') = 'object'
                    THEN a.payload -> 'fixtureSummary' END AS summary
        FROM actions a WHERE a.fixture_id = m.fixture_id AND a.seq < l.seq
        ORDER BY a.seq DESC LIMIT 1
    ) p ON true
    CROSS JOIN LATERAL (
        -- what the latest packet's action changes in our views (any of its packets: an
        -- Updated packet may have changed its type)
        SELECT coalesce(bool_or(t.action_type_id IN (6, 7, 9, 10, 14)), false) AS frame,
               coalesce(bool_or(t.action_type_id = 7), false) AS frames
        FROM actions t
        WHERE t.fixture_id = m.fixture_id
          AND (t.seq = l.seq OR (l.action_id IS NOT NULL AND t.action_id = l.action_id))
    ) touched
    CROSS JOIN LATERAL (
        SELECT 'home_frames' AS field, 0 AS n, m.home_frames::text AS ours,
               ingest_int(l.summary ->> 'homeTeamScore')::text AS provider,
               m.home_frames::text AS ours_cmp,
               ingest_int(l.summary ->> 'homeTeamScore')::text AS provider_cmp,
               ingest_int(p.summary ->> 'homeTeamScore')::text AS previous_cmp,
               ingest_int(l.summary ->> 'homeTeamScore') IS NOT NULL AS compared,
               touched.frames AS touched
        UNION ALL
        SELECT 'away_frames', 0, m.away_frames::text,
               ingest_int(l.summary ->> 'awayTeamScore')::text,
               m.away_frames::text,
               ingest_int(l.summary ->> 'awayTeamScore')::text,
               ingest_int(p.summary ->> 'awayTeamScore')::text,
               ingest_int(l.summary ->> 'awayTeamScore') IS NOT NULL,
               touched.frames
        UNION ALL
        SELECT 'finished', 0, m.finished::text, s.v, m.finished::text, s.v, ps.v,
               s.v IS NOT NULL, l.finished
        FROM (SELECT CASE lower(l.summary ->> 'finished') WHEN 'true' THEN 'true'
                                                          WHEN 'false' THEN 'false' END) s(v),
             (SELECT CASE lower(p.summary ->> 'finished') WHEN 'true' THEN 'true'
                                                          WHEN 'false' THEN 'false' END) ps(v)
        UNION ALL
        SELECT 'frame ' || fr.n || ' ' || x.field, fr.n, x.ours, x.provider,
               x.ours_cmp, x.provider_cmp, x.previous_cmp, x.compared,
               touched.frame AND l.period = fr.n AND (fr.in_summary OR NOT fr.in_previous)
        FROM (
            SELECT coalesce(o.frame_number, s.n) AS n,
                   o.frame_number IS NOT NULL AS in_ours, s.n IS NOT NULL AS in_summary,
                   o.home_points AS o_home, o.away_points AS o_away, o.winner AS o_winner,
                   o.finished AS o_finished,
                   s.home_points AS s_home, s.away_points AS s_away, s.winner AS s_winner,
                   s.has_winner AS s_has_winner, s.finished AS s_finished,
                   q.n IS NOT NULL AS in_previous,
                   q.home_points AS q_home, q.away_points AS q_away, q.winner AS q_winner,
                   q.finished AS q_finished
            FROM (SELECT f.frame_number, f.home_points, f.away_points, f.winner, f.finished
                  FROM {p}frame_results f WHERE f.fixture_id = m.fixture_id) o
            FULL JOIN ({_PERIODS.format(summary="l.summary")}) s ON s.n = o.frame_number
            LEFT JOIN ({_PERIODS.format(summary="p.summary")}) q
                   ON q.n = coalesce(o.frame_number, s.n)
            WHERE jsonb_typeof(l.summary -> 'periods') = 'array'
        ) fr
        CROSS JOIN LATERAL (
            SELECT 'finished' AS field,
                   CASE WHEN fr.in_ours THEN fr.o_finished::text END AS ours,
                   fr.s_finished AS provider,
                   coalesce(fr.o_finished::text, 'false') AS ours_cmp,
                   coalesce(fr.s_finished, 'false') AS provider_cmp,
                   coalesce(fr.q_finished, 'false') AS previous_cmp,
                   NOT fr.in_summary OR fr.s_finished IS NOT NULL AS compared
            UNION ALL
            SELECT 'home_points', fr.o_home::text, fr.s_home::text,
                   fr.o_home::text, fr.s_home::text, fr.q_home::text,
                   fr.in_ours AND fr.s_home IS NOT NULL
                       AND (coalesce(fr.o_finished, false) OR fr.s_finished = 'true')
            UNION ALL
            SELECT 'away_points', fr.o_away::text, fr.s_away::text,
                   fr.o_away::text, fr.s_away::text, fr.q_away::text,
                   fr.in_ours AND fr.s_away IS NOT NULL
                       AND (coalesce(fr.o_finished, false) OR fr.s_finished = 'true')
            UNION ALL
            SELECT 'winner', fr.o_winner, fr.s_winner,
                   fr.o_winner, fr.s_winner, fr.q_winner,
                   (coalesce(fr.o_finished, false) OR fr.s_finished = 'true')
                       AND (NOT fr.in_summary OR fr.s_has_winner)
        ) x
    ) c
    WHERE c.compared
      AND c.ours_cmp IS DISTINCT FROM c.provider_cmp
      AND NOT (c.touched AND c.provider_cmp IS NOT DISTINCT FROM c.previous_cmp)
    """


# in the order they read each other: each derivation of 0003 / 0008, by name
DEFINITIONS = {
    "fixture_lineups": _fixture_lineups,
    "action_states": _action_states,
    "frame_results": _frame_results,
    "breaks": _breaks,
    "match_results": _match_results,
    "player_match_stats": _player_match_stats,
    "summary_mismatches": _summary_mismatches,
}
# the views whose rows are stored: their columns, and the stored table's key (action_states is
# a row per action, the packets themselves in their latest state: it is not stored)
STORED_VIEWS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "fixture_lineups": (
        ("fixture_id", "home_team_id", "away_team_id", "home_player_id", "away_player_id",
         "home_player", "away_player", "seq"),
        "fixture_id",
    ),
    "frame_results": (
        ("fixture_id", "frame_number", "home_points", "away_points", "winner", "finished",
         "conceded", "conceded_by", "broke_off", "provisional", "counted_home_points",
         "counted_away_points", "started_at", "ended_at"),
        "fixture_id, frame_number",
    ),
    "breaks": (
        ("fixture_id", "frame_number", "side", "player_id", "break_score", "player_name",
         "team_id", "action_id", "seq", "first_seq", "provider_ts", "provisional",
         "potted_balls"),
        "fixture_id, seq",
    ),
    "match_results": (
        ("fixture_id", "home_frames", "away_frames", "winner", "finished", "status", "best_of",
         "frames_to_win", "home_player", "away_player", "home_player_id", "away_player_id",
         "current_frame", "provisional", "last_seq", "collection_status"),
        "fixture_id",
    ),
    "player_match_stats": (
        ("fixture_id", "side", "player_id", "player_name", "team_id", "pots", "fouls",
         "points_scored", "highest_break", "centuries", "breaks_50_plus", "breaks",
         "frames_won"),
        "fixture_id, side",
    ),
    "summary_mismatches": (
        ("fixture_id", "seq", "field", "ours", "provider"),
        None,  # no natural key: an index on fixture_id
    ),
}  # fmt: skip
STORED = tuple(f"stored_{view}" for view in STORED_VIEWS)


def _stored_table(view: str) -> tuple[str, ...]:
    """The table of a view's stored rows: its columns and types (those of the view), keyed."""
    key = STORED_VIEWS[view][1]
    keyed = (
        (f"ALTER TABLE stored_{view} ADD PRIMARY KEY ({key})",)
        if key
        else (
            f"ALTER TABLE stored_{view} ALTER COLUMN fixture_id SET NOT NULL",
            f"CREATE INDEX stored_{view}_fixture_idx ON stored_{view} (fixture_id)",
        )
    )
    return (
        f"CREATE TABLE stored_{view} AS SELECT * FROM live_{view} WITH NO DATA",
        *keyed,
        f"COMMENT ON TABLE stored_{view} IS 'The {view} view''s rows of the fixtures whose "
        "results are stored (result_fixtures.stored_at), kept by refresh_fixture_results().'",
    )


def _combined(view: str) -> str:
    """The view: the stored rows, and the live derivation for each fixture not stored.

    The live side's fixture_id is the key's (k.fixture_id), so that ``WHERE fixture_id = X``
    reaches both sides: the stored table's key, and one probe of live_fixtures. OFFSET 0 keeps
    the lateral subquery whole, so that the key reaches the derivation's index scans as a
    parameter (a flattened join could not push it into the grouped view).
    """
    columns = STORED_VIEWS[view][0]
    stored = ", ".join(f"s.{c}" for c in columns)
    live = ", ".join("k.fixture_id" if c == "fixture_id" else f"v.{c}" for c in columns)
    return f"""
    CREATE OR REPLACE VIEW {view} AS
    SELECT {stored}
    FROM stored_{view} s
    UNION ALL
    SELECT {live}
    FROM live_fixtures k
    CROSS JOIN LATERAL (
        SELECT * FROM live_{view} l WHERE l.fixture_id = k.fixture_id OFFSET 0
    ) v
    """


_FORGET = "\n    ".join(f"DELETE FROM {t} WHERE fixture_id = fixture;" for t in STORED)


def _store() -> str:
    """One statement that stores a fixture's rows of every stored view.

    Each definition of 0003 / 0008 (word for word, as in the live_ views) reads the views it
    reads as CTEs holding that fixture's rows of them (``fx_<view>``, the prefix): its action
    states are derived once, each packet's metadata read from its payload once, where the six
    live_ views would derive them six times. The rows are those of the live_ views: every
    definition is per fixture (tests/integration/test_stored_results.py holds the two equal).
    """
    derived = ",\n".join(
        f"fx_{view} AS MATERIALIZED (SELECT * FROM ({define('fx_')}) d "
        "WHERE d.fixture_id = fixture)"
        for view, define in DEFINITIONS.items()
    )
    *first, last = STORED_VIEWS
    stores = "".join(
        f",\nstore_{view} AS (INSERT INTO stored_{view} SELECT * FROM fx_{view})" for view in first
    )
    # a data-modifying CTE runs to its end whether or not the statement reads it
    return f"WITH {derived}{stores}\nINSERT INTO stored_{last} SELECT * FROM fx_{last}"


# plan_cache_mode: its statements are planned once per session (a generic plan: the fixture's
# key is a parameter), not at each of a session's first five refreshes (about 40 ms each).
# jit: the derivations' cost estimates are high enough for PostgreSQL's JIT, which would compile
# them for seconds in a session that has it on (the worker's has not) to save nothing.
_REFRESH = f"""
CREATE FUNCTION refresh_fixture_results(fixture uuid) RETURNS boolean
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    store boolean;
BEGIN
    -- the fixture's row is its lock: one refresh at a time, and none while another transaction
    -- writes a batch of its packets (the triggers take the same lock)
    INSERT INTO result_fixtures (fixture_id) VALUES (fixture) ON CONFLICT DO NOTHING;
    PERFORM 1 FROM result_fixtures WHERE fixture_id = fixture FOR NO KEY UPDATE;
    {_FORGET}
    IF NOT EXISTS (SELECT 1 FROM actions WHERE fixture_id = fixture) THEN
        DELETE FROM result_fixtures WHERE fixture_id = fixture;
        RETURN false;
    END IF;
    -- stored once finished; only where each statement sees every batch committed before it
    store := EXISTS (SELECT 1 FROM actions WHERE fixture_id = fixture AND finished)
             AND current_setting('transaction_isolation') = 'read committed';
    IF NOT store THEN
        UPDATE result_fixtures SET stored_at = NULL
        WHERE fixture_id = fixture AND stored_at IS NOT NULL;
        RETURN false;
    END IF;
    {_store()};
    UPDATE result_fixtures SET stored_at = now() WHERE fixture_id = fixture;
    RETURN true;
END
$$
"""

_REFRESH_ALL = """
CREATE FUNCTION refresh_fixture_results() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    fixture uuid;
    stored integer := 0;
BEGIN
    FOR fixture IN
        SELECT fixture_id FROM result_fixtures
        UNION SELECT DISTINCT fixture_id FROM actions
        ORDER BY 1
    LOOP
        IF refresh_fixture_results(fixture) THEN
            stored := stored + 1;
        END IF;
    END LOOP;
    RETURN stored;
END
$$
"""

# a refresh from a trigger: odd data the derivation fails on never refuses the packets
_KEEP = f"""
CREATE FUNCTION results_keep(fixture uuid) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM refresh_fixture_results(fixture);
EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN
    -- computed live, where the same error shows to whoever reads it
    {_FORGET}
    UPDATE result_fixtures SET stored_at = NULL WHERE fixture_id = fixture;
    RAISE WARNING 'the results of fixture % are not stored (computed live): %',
        fixture, SQLERRM;
END
$$
"""

_AFTER_INSERT = """
CREATE FUNCTION results_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    f record;
    fixture uuid;
    refresh boolean;
    others boolean;
BEGIN
    -- Each fixture of the batch is locked (its result_fixtures row, which a refresh holds), so
    -- that a refresh under way in another transaction is waited for, and then seen: the lock
    -- returns the row as that transaction left it. The usual batch, packets of one fixture
    -- already listed, costs this one statement.
    SELECT r.fixture_id,
           r.stored_at IS NOT NULL OR EXISTS (SELECT 1 FROM new_actions n WHERE n.finished),
           EXISTS (SELECT 1 FROM new_actions n WHERE n.fixture_id <> r.fixture_id)
    INTO fixture, refresh, others
    FROM result_fixtures r
    WHERE r.fixture_id = (SELECT n.fixture_id FROM new_actions n LIMIT 1)
    FOR NO KEY UPDATE OF r;
    IF FOUND AND NOT others THEN
        IF refresh THEN
            PERFORM results_keep(fixture);
        END IF;
        RETURN NULL;
    END IF;
    -- several fixtures, or one not listed yet (every fixture with packets is listed: the views
    -- compute the ones not stored), locked in one order for every writer
    INSERT INTO result_fixtures (fixture_id)
    SELECT DISTINCT fixture_id FROM new_actions ORDER BY 1
    ON CONFLICT DO NOTHING;
    FOR f IN
        SELECT r.fixture_id, r.stored_at IS NOT NULL AS stored, n.finished
        FROM (SELECT fixture_id, bool_or(finished) AS finished
              FROM new_actions GROUP BY fixture_id) n
        JOIN result_fixtures r ON r.fixture_id = n.fixture_id
        ORDER BY r.fixture_id
        FOR NO KEY UPDATE OF r
    LOOP
        IF f.stored OR f.finished THEN
            PERFORM results_keep(f.fixture_id);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$
"""

_AFTER_CHANGE = """
CREATE FUNCTION results_after_{op}() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    fixture uuid;
BEGIN
    FOR fixture IN {fixtures} ORDER BY 1 LOOP
        PERFORM results_keep(fixture);
    END LOOP;
    RETURN NULL;
END
$$
"""

_AFTER_TRUNCATE = f"""
CREATE FUNCTION results_after_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE {", ".join(STORED)}, result_fixtures;
    RETURN NULL;
END
$$
"""

UPGRADE = (
    """
    CREATE TABLE result_fixtures (
        fixture_id uuid PRIMARY KEY,
        stored_at timestamptz
    )
    """,
    """
    COMMENT ON TABLE result_fixtures IS 'Every fixture with packets (kept by the triggers on
    actions), and when its results were stored in the stored_* tables; stored_at NULL: the views
    compute them from the packets. See refresh_fixture_results().'
    """,
    *(
        statement
        for view, define in DEFINITIONS.items()
        for statement in (
            f"CREATE VIEW live_{view} AS {define('live_')}",
            f"COMMENT ON VIEW live_{view} IS 'The {view} view''s derivation from the packets, "
            "for every fixture (as migrations 0003 and 0008 define it): what is stored, and what "
            "the view computes for the fixtures not stored.'",
        )
    ),
    *(statement for view in STORED_VIEWS for statement in _stored_table(view)),
    """
    CREATE VIEW live_fixtures AS
    SELECT r.fixture_id FROM result_fixtures r WHERE r.stored_at IS NULL
    UNION ALL
    SELECT f.fixture_id FROM fixtures f
    WHERE NOT EXISTS (SELECT 1 FROM result_fixtures r WHERE r.fixture_id = f.fixture_id)
    """,
    """
    COMMENT ON VIEW live_fixtures IS 'The fixtures whose results the views compute from the
    packets: those of result_fixtures not stored, and registered fixtures it does not list.'
    """,
    *(_combined(view) for view in STORED_VIEWS),
    _REFRESH,
    """
    COMMENT ON FUNCTION refresh_fixture_results(uuid) IS 'Bring the stored results of one
    fixture up to date: stored again if it has a finished packet (true), else computed live by
    the views (false). The triggers on actions run it; run it by hand only after writing actions
    with the triggers off.'
    """,
    _REFRESH_ALL,
    """
    COMMENT ON FUNCTION refresh_fixture_results() IS 'refresh_fixture_results(fixture) for every
    fixture; returns how many are stored.'
    """,
    _KEEP,
    _AFTER_INSERT,
    _AFTER_CHANGE.format(
        op="update",
        fixtures="SELECT fixture_id FROM old_actions UNION SELECT fixture_id FROM new_actions",
    ),
    _AFTER_CHANGE.format(op="delete", fixtures="SELECT DISTINCT fixture_id FROM old_actions"),
    _AFTER_TRUNCATE,
    """
    CREATE TRIGGER actions_results_insert AFTER INSERT ON actions
    REFERENCING NEW TABLE AS new_actions
    FOR EACH STATEMENT EXECUTE FUNCTION results_after_insert()
    """,
    """
    CREATE TRIGGER actions_results_update AFTER UPDATE ON actions
    REFERENCING OLD TABLE AS old_actions NEW TABLE AS new_actions
    FOR EACH STATEMENT EXECUTE FUNCTION results_after_update()
    """,
    """
    CREATE TRIGGER actions_results_delete AFTER DELETE ON actions
    REFERENCING OLD TABLE AS old_actions
    FOR EACH STATEMENT EXECUTE FUNCTION results_after_delete()
    """,
    """
    CREATE TRIGGER actions_results_truncate AFTER TRUNCATE ON actions
    FOR EACH STATEMENT EXECUTE FUNCTION results_after_truncate()
    """,
    # the fixtures already stored: listed, and the finished ones stored
    "SELECT refresh_fixture_results()",
)

DOWNGRADE = (
    "DROP TRIGGER actions_results_truncate ON actions",
    "DROP TRIGGER actions_results_delete ON actions",
    "DROP TRIGGER actions_results_update ON actions",
    "DROP TRIGGER actions_results_insert ON actions",
    # the views as 0003 and 0008 made them
    *(f"CREATE OR REPLACE VIEW {view} AS {DEFINITIONS[view]('')}" for view in STORED_VIEWS),
    "DROP FUNCTION results_after_truncate()",
    "DROP FUNCTION results_after_delete()",
    "DROP FUNCTION results_after_update()",
    "DROP FUNCTION results_after_insert()",
    "DROP FUNCTION results_keep(uuid)",
    "DROP FUNCTION refresh_fixture_results()",
    "DROP FUNCTION refresh_fixture_results(uuid)",
    "DROP VIEW live_fixtures",
    *(f"DROP TABLE {table}" for table in STORED),
    *(f"DROP VIEW live_{view}" for view in reversed(DEFINITIONS)),
    "DROP TABLE result_fixtures",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
