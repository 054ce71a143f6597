"""summary_mismatches: where the provider's own fixtureSummary disagrees with our views.

Every packet carries the provider's account of the match in ``fixtureSummary``. For each fixture
this view takes the summary of its latest stored packet (highest seq) and compares it with our
views over the same stored rows (``match_results``, ``frame_results``). One row per
disagreement: ``fixture_id``, ``seq`` (the packet whose summary disagrees), ``field``, ``ours``,
``provider`` (text).

What is compared (``field``):

* ``home_frames`` / ``away_frames``: top-level ``homeTeamScore`` / ``awayTeamScore`` against
  ``match_results``;
* ``finished``: the summary's ``finished`` against ``match_results.finished``;
* for every frame in the summary's ``periods`` or in ``frame_results``:
  ``frame N finished`` (``isFinished``; a frame missing on one side counts as not finished there,
  and its value is shown as NULL); once either side says the frame is finished,
  ``frame N home_points`` / ``frame N away_points`` (when both sides have the frame) and
  ``frame N winner``. The points of a frame in play are not compared: they change with almost
  every packet, and a summary one packet behind would differ from them all the time.

Fields a summary lacks (no such key, JSON null for a number, an unreadable value, or no
``periods`` array at all) are not compared.

The lag rule. The generator builds each packet's summary *after* folding that packet in
(``_publish``: the contribution is applied, then ``_summary()``; Frame Ended marks the period
finished and counts the frame before the packet is emitted), so in our model a summary is never
behind. The real feed may update its summary one packet late (the samples already show a summary
that does not follow its own action: Team Colours at period 0 with ``currentPeriod`` 1). So a
difference is tolerated, and not reported, when all of these hold:

* the latest packet's own action is the one that changes the field in our views: a Frame
  Started / Frame Ended / Ball Potted / Foul / Frame Conceded (any packet of that action with
  such a type) changes the fields of its frame; a Frame Ended also changes ``home_frames`` /
  ``away_frames``; a packet with ``finished: true`` changes ``finished``;
* and the summary of the latest packet shows, for that field, the same value as the summary of
  the packet before it (it has not moved yet: it is behind, not different).

Such a difference clears itself with the next packet; a summary that is more than one packet
behind, or that moves to a value other than ours, is reported. Anything else is reported at once.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One summary's periods as rows: frame number, points, winner, finished (text 'true'/'false'),
# and which keys the entry has. A non-array ``periods`` or a non-object entry yields nothing.
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

UPGRADE = (
    f"""
    CREATE VIEW summary_mismatches AS
    SELECT m.fixture_id, l.seq, c.field, c.ours, c.provider
    FROM match_results m
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
                  FROM frame_results f WHERE f.fixture_id = m.fixture_id) o
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
    """,
    """
    COMMENT ON VIEW summary_mismatches IS 'Where the fixtureSummary of a fixture''s latest stored
    packet (seq) disagrees with our views over the same rows: one row per field (home_frames,
    away_frames, finished, frame N finished / home_points / away_points / winner), ours and the
    provider''s value as text. Fields a summary lacks are not compared; a summary one packet behind
    its own action is tolerated (see migration 0008).'
    """,
)

DOWNGRADE = ("DROP VIEW summary_mismatches",)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
