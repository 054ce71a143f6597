"""A betting status per fixture: open, suspended (with a reason) or closed, as an append-only log
of changes (betting_events, announced with NOTIFY betting_status), each fixture's latest one and
the worker's confirmation that it is alive (betting_fixtures), and the fixture_betting view that
is right even when no worker runs.

Who writes what (README, Live betting status):

- A trigger on ``actions`` (statement level, over the rows the statement inserted: INSERT and
  COPY alike) writes what the packets themselves say, in the transaction that stores them: a
  provider suspension (a Status Updated packet saying ``CollectionSuspended``) and ``closed``
  (a finished packet, or ``CollectionDropped``). A packet saying ``CollectingLive`` again only
  lifts the provider's suspension: opening is the worker's, which knows the feed's state.
- The worker writes every other change (``open``, ``feed_down``, ``feed_stale``,
  ``feed_delayed``), renews ``alive_at`` of its fixtures in one statement a second
  (:func:`betting_report`), and writes ``worker_silent`` for fixtures whose worker stopped
  renewing them (its own on a clean stop, anyone's that went quiet).
- The view reads ``suspended`` / ``worker_silent`` for a fixture whose latest event is ``open``
  but whose ``alive_at`` is older than its ``stale_after``: no process needs to run for that.

Exactly once per change is the database's: a BEFORE INSERT trigger on ``betting_events`` locks
the fixture's ``betting_fixtures`` row and skips an event equal to the fixture's latest, so two
workers, a restart or a failover cannot write the same change twice in a row. It also keeps the
precedence that only the database can see whole: ``closed`` is final (unless a drop is lifted by
a later CollectingLive), and while the provider has suspended collection nothing but the
provider's suspension or ``closed`` is written.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = (
    """
    CREATE SEQUENCE betting_events_id_seq
    """,
    # the id and the time are taken under the fixture's lock (betting_events_once): in id
    # order, a fixture's events are in the order their changes were decided
    """
    CREATE TABLE betting_events (
        id bigint PRIMARY KEY,
        fixture_id uuid NOT NULL,
        status text NOT NULL CHECK (status IN ('open', 'suspended', 'closed')),
        reason text CHECK (reason IN ('provider_suspended', 'feed_down', 'feed_stale',
                                      'feed_delayed', 'worker_silent')),
        seq bigint NOT NULL,
        at timestamptz NOT NULL DEFAULT clock_timestamp(),
        CHECK ((status = 'suspended') = (reason IS NOT NULL))
    )
    """,
    "ALTER SEQUENCE betting_events_id_seq OWNED BY betting_events.id",
    "CREATE INDEX betting_events_fixture_idx ON betting_events (fixture_id, id)",
    """
    COMMENT ON TABLE betting_events IS 'Append-only: one row per change of a fixture''s betting
    status (open; suspended with a reason; closed), never two alike in a row for a fixture.
    seq: the last stored seq at that moment. Announced with NOTIFY betting_status (the row as
    JSON) in the same transaction.'
    """,
    """
    CREATE TABLE betting_fixtures (
        fixture_id uuid PRIMARY KEY,
        status text,
        reason text,
        since timestamptz,
        seq bigint NOT NULL DEFAULT 0,
        event_id bigint,
        provider text CHECK (provider IN ('suspended', 'dropped')),
        provider_seq bigint NOT NULL DEFAULT 0,
        finished boolean NOT NULL DEFAULT false,
        alive_at timestamptz,
        alive_by text,
        stale_after double precision NOT NULL DEFAULT 15
    ) WITH (fillfactor = 50)
    """,
    # the sweep for fixtures whose worker went quiet looks at the open ones only; alive_at is
    # not indexed, so the renewal a second stays a HOT update
    "CREATE INDEX betting_fixtures_open_idx ON betting_fixtures (fixture_id) WHERE status = 'open'",
    """
    COMMENT ON TABLE betting_fixtures IS 'Per fixture: its latest betting event (status, reason,
    since, seq, event_id), what the provider said last in a Status Updated packet (provider:
    suspended or dropped, NULL collecting; provider_seq: that packet), whether it finished, and
    when a worker last confirmed it alive (alive_at, alive_by) with its stale_after (seconds).
    The row every writer of betting_events locks.'
    """,
    # The collection status a packet states: the action's metadata when it is text (the
    # provider's own sample puts a numeric code there), else the fixtureSummary's.
    """
    CREATE FUNCTION betting_collection(payload jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT CASE
            WHEN payload #>> '{fixtureSummary,collectionStatus}' = 'CollectionDropped'
              OR payload #>> '{fixtureAction,metadata,collectionStatus}' = 'CollectionDropped'
                THEN 'CollectionDropped'
            WHEN jsonb_typeof(payload #> '{fixtureAction,metadata,collectionStatus}') = 'string'
                THEN payload #>> '{fixtureAction,metadata,collectionStatus}'
            ELSE payload #>> '{fixtureSummary,collectionStatus}'
        END
    $$
    """,
    # Exactly once per change, and the precedence the database can see whole.
    """
    CREATE FUNCTION betting_events_once() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        b betting_fixtures%ROWTYPE;
    BEGIN
        INSERT INTO betting_fixtures (fixture_id) VALUES (NEW.fixture_id)
        ON CONFLICT (fixture_id) DO NOTHING;
        SELECT * INTO b FROM betting_fixtures WHERE fixture_id = NEW.fixture_id FOR UPDATE;
        IF NEW.status <> 'closed' THEN
            IF b.finished OR b.provider = 'dropped' THEN
                RETURN NULL;  -- closed stays closed
            END IF;
            IF b.provider = 'suspended' AND NEW.reason IS DISTINCT FROM 'provider_suspended' THEN
                RETURN NULL;  -- the provider's suspension comes first, until it is lifted
            END IF;
            IF NEW.reason = 'worker_silent' AND b.alive_at IS NOT NULL
               AND b.alive_at + make_interval(secs => b.stale_after) >= now() THEN
                RETURN NULL;  -- its worker confirmed it alive meanwhile
            END IF;
        END IF;
        IF b.status IS NOT DISTINCT FROM NEW.status AND b.reason IS NOT DISTINCT FROM NEW.reason
        THEN
            RETURN NULL;  -- the same as the fixture's latest: not a change
        END IF;
        NEW.id := nextval('betting_events_id_seq');
        NEW.at := clock_timestamp();
        IF NEW.seq IS NULL THEN
            NEW.seq := coalesce(
                (SELECT max(a.seq) FROM actions a WHERE a.fixture_id = NEW.fixture_id), 0);
        END IF;
        UPDATE betting_fixtures
        SET status = NEW.status, reason = NEW.reason, since = NEW.at, seq = NEW.seq,
            event_id = NEW.id
        WHERE fixture_id = NEW.fixture_id;
        PERFORM pg_notify('betting_status', json_build_object(
            'id', NEW.id, 'fixture_id', NEW.fixture_id, 'status', NEW.status,
            'reason', NEW.reason, 'seq', NEW.seq, 'at', NEW.at)::text);
        RETURN NEW;
    END
    $$
    """,
    """
    CREATE TRIGGER betting_events_once
    BEFORE INSERT ON betting_events
    FOR EACH ROW EXECUTE FUNCTION betting_events_once()
    """,
    """
    CREATE FUNCTION betting_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'betting_events is append-only';
    END
    $$
    """,
    """
    CREATE TRIGGER betting_events_append_only
    BEFORE UPDATE OR DELETE ON betting_events
    FOR EACH ROW EXECUTE FUNCTION betting_events_append_only()
    """,
    # What the stored packets say, in the transaction that stores them. Per row it costs one
    # comparison of two typed columns: only Status Updated and finished packets are looked into,
    # and a batch without one returns after that one scan (about 10 us a statement measured,
    # bench/betting.py; the transition table itself is most of it).
    """
    CREATE FUNCTION betting_on_actions() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        r record;
        b betting_fixtures%ROWTYPE;
    BEGIN
        -- the usual batch says nothing of collection: out after one cheap scan (a query of
        -- its own: it plans in a fraction of the time of the one below)
        IF NOT EXISTS (SELECT 1 FROM new_actions n WHERE n.action_type_id = 22 OR n.finished)
        THEN
            RETURN NULL;
        END IF;
        FOR r IN
            SELECT DISTINCT ON (c.fixture_id) c.fixture_id, c.seq, c.finished, c.collection
            FROM (
                SELECT n.fixture_id, n.seq, n.finished,
                       CASE WHEN n.action_type_id = 22 THEN betting_collection(n.payload) END
                           AS collection
                FROM new_actions n
                WHERE n.action_type_id = 22 OR n.finished
            ) c
            WHERE c.finished
               OR c.collection IN ('CollectionSuspended', 'CollectingLive', 'CollectionDropped')
            ORDER BY c.fixture_id, c.seq DESC  -- one lock order for every writer
        LOOP
            INSERT INTO betting_fixtures (fixture_id) VALUES (r.fixture_id)
            ON CONFLICT (fixture_id) DO NOTHING;
            SELECT * INTO b FROM betting_fixtures WHERE fixture_id = r.fixture_id FOR UPDATE;
            IF r.collection IS NOT NULL AND r.seq > b.provider_seq THEN
                UPDATE betting_fixtures
                SET provider = CASE r.collection WHEN 'CollectionSuspended' THEN 'suspended'
                                                 WHEN 'CollectionDropped' THEN 'dropped' END,
                    provider_seq = r.seq,
                    finished = finished OR r.finished
                WHERE fixture_id = r.fixture_id;
            ELSIF r.finished THEN
                UPDATE betting_fixtures SET finished = true WHERE fixture_id = r.fixture_id;
            END IF;
            IF r.finished OR (r.collection = 'CollectionDropped' AND r.seq > b.provider_seq) THEN
                INSERT INTO betting_events (fixture_id, status, reason, seq)
                VALUES (r.fixture_id, 'closed', NULL, r.seq);
            ELSIF r.collection = 'CollectionSuspended' AND r.seq > b.provider_seq THEN
                INSERT INTO betting_events (fixture_id, status, reason, seq)
                VALUES (r.fixture_id, 'suspended', 'provider_suspended', r.seq);
            END IF;
        END LOOP;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER betting_on_actions
    AFTER INSERT ON actions
    REFERENCING NEW TABLE AS new_actions
    FOR EACH STATEMENT EXECUTE FUNCTION betting_on_actions()
    """,
    # The worker's one statement: its changes, the renewal of its fixtures' alive_at, and (with
    # sweep) worker_silent for fixtures whose worker, whoever it was, stopped renewing them
    # (not those it renews or follows itself: own, a fixture still connecting, say).
    # Returns the status in effect of the fixtures written and of those renewed that are not
    # open (NULL: none yet).
    """
    CREATE FUNCTION betting_report(
        worker text, ids uuid[], statuses text[], reasons text[], alive uuid[],
        stale_after double precision, sweep boolean, own uuid[] DEFAULT '{}'
    ) RETURNS TABLE (fixture_id uuid, status text, reason text)
    LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO betting_events (fixture_id, status, reason)
        SELECT c.fixture_id, c.status, c.reason
        FROM unnest(ids, statuses, reasons) AS c(fixture_id, status, reason)
        ORDER BY c.fixture_id;  -- one lock order for every writer
        IF cardinality(alive) > 0 THEN
            PERFORM 1 FROM betting_fixtures b WHERE b.fixture_id = ANY(alive)
            ORDER BY b.fixture_id FOR UPDATE;
            UPDATE betting_fixtures b
            SET alive_at = now(), alive_by = worker, stale_after = betting_report.stale_after
            WHERE b.fixture_id = ANY(alive);
        END IF;
        IF sweep THEN
            INSERT INTO betting_events (fixture_id, status, reason)
            SELECT b.fixture_id, 'suspended', 'worker_silent'
            FROM betting_fixtures b
            WHERE b.status = 'open'
              AND (b.alive_at IS NULL
                   OR b.alive_at + make_interval(secs => b.stale_after) < now())
              AND NOT b.fixture_id = ANY(alive) AND NOT b.fixture_id = ANY(own)
            ORDER BY b.fixture_id;
        END IF;
        -- the fixtures written, and of those renewed the ones not open: the caller takes the
        -- others as open (a second's renewal of a thousand open fixtures answers nothing)
        RETURN QUERY
        SELECT n.f, b.status, b.reason
        FROM (SELECT DISTINCT u.f FROM unnest(ids || alive) AS u(f)) n
        LEFT JOIN betting_fixtures b ON b.fixture_id = n.f
        WHERE n.f = ANY(ids) OR b.status IS DISTINCT FROM 'open';
    END
    $$
    """,
    # A clean stop: the worker no longer confirms these fixtures, and says so at once.
    """
    CREATE FUNCTION betting_leave(worker text, ids uuid[]) RETURNS void
    LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM 1 FROM betting_fixtures b WHERE b.fixture_id = ANY(ids)
        ORDER BY b.fixture_id FOR UPDATE;
        UPDATE betting_fixtures b SET alive_at = NULL
        WHERE b.fixture_id = ANY(ids) AND b.alive_by = worker;
        INSERT INTO betting_events (fixture_id, status, reason)
        SELECT b.fixture_id, 'suspended', 'worker_silent' FROM betting_fixtures b
        WHERE b.fixture_id = ANY(ids) AND b.alive_at IS NULL
        ORDER BY b.fixture_id;
    END
    $$
    """,
    """
    CREATE VIEW fixture_betting AS
    SELECT f.fixture_id,
           CASE WHEN s.silent THEN 'suspended' ELSE s.status END AS status,
           CASE WHEN s.silent THEN 'worker_silent' ELSE s.reason END AS reason,
           CASE WHEN s.silent THEN b.alive_at + make_interval(secs => b.stale_after)
                ELSE b.since END AS since,
           b.alive_at,
           coalesce(b.seq, f.last_seq) AS seq,
           b.event_id,
           b.stale_after
    FROM fixtures f
    LEFT JOIN betting_fixtures b ON b.fixture_id = f.fixture_id
    CROSS JOIN LATERAL (
        SELECT coalesce(b.status, CASE WHEN f.finished THEN 'closed' ELSE 'suspended' END)
                   AS status,
               CASE WHEN b.status IS NOT NULL THEN b.reason
                    WHEN NOT f.finished THEN 'worker_silent' END AS reason,
               b.status = 'open'
                   AND (b.alive_at IS NULL
                        OR b.alive_at + make_interval(secs => b.stale_after) < now()) AS silent
    ) s
    """,
    """
    COMMENT ON VIEW fixture_betting IS 'Per fixture: open, suspended with a reason
    (provider_suspended, feed_down, feed_stale, feed_delayed, worker_silent) or closed, since
    when, and when its worker last confirmed it alive; seq and event_id: the stored seq and the
    betting_events row of its latest change. Open only while a worker confirms it within its
    stale_after seconds: right even when no worker runs.'
    """,
)

DOWNGRADE = (
    "DROP VIEW fixture_betting",
    "DROP TRIGGER betting_on_actions ON actions",
    "DROP FUNCTION betting_on_actions()",
    "DROP FUNCTION betting_report",
    "DROP FUNCTION betting_leave",
    "DROP TABLE betting_events",
    "DROP FUNCTION betting_events_once()",
    "DROP FUNCTION betting_events_append_only()",
    "DROP FUNCTION betting_collection(jsonb)",
    "DROP TABLE betting_fixtures",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
