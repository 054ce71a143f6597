"""Fixture leases, so that several workers share one database's fixtures: each worker heartbeats
in ``workers`` and claims at most its fair share (the runnable fixtures divided by the live
workers, rounded up); a lease not renewed within its TTL lets another worker take the fixture.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from ingest.db.engine import Database
from ingest.db.registry import LOCK_IN_ORDER

_WORKER_HEARTBEAT = """
INSERT INTO workers (worker_id, fixtures) VALUES (:owner, :held)
ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now(), fixtures = EXCLUDED.fixtures
"""

_FAIR_SHARE = """
SELECT ceil(
    (SELECT count(*) FROM fixtures WHERE enabled AND NOT finished)::numeric
    / greatest(1, (SELECT count(*) FROM workers
                   WHERE heartbeat_at > now() - make_interval(secs => :ttl)
                      OR worker_id = :owner)))::integer
"""

_CLAIM = f"""
WITH share AS ({_FAIR_SHARE}),
candidates AS (
    SELECT fixture_id FROM fixtures
    WHERE enabled AND NOT finished
      AND (owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at < now())
    ORDER BY lease_expires_at NULLS FIRST, added_at, fixture_id
    LIMIT greatest(0, least(:cap, (SELECT * FROM share)) - :held)
    FOR UPDATE SKIP LOCKED
)
UPDATE fixtures f SET owner = :owner,
       lease_expires_at = now() + make_interval(secs => :ttl),
       lease_version = f.lease_version + 1
FROM candidates c WHERE f.fixture_id = c.fixture_id
RETURNING f.fixture_id
"""


class LeaseTable:
    """Claim, renew and release leases; read the fair share."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def claim_fixtures(
        self, owner: str, ttl: float, max_fixtures: int | None, held: int
    ) -> list[uuid.UUID]:
        """Heartbeat, then claim unowned or expired fixtures up to this worker's fair share.

        The share is the runnable fixtures divided by the live workers (rounded up), capped by
        ``max_fixtures``; ``FOR UPDATE SKIP LOCKED`` lets workers claim at the same moment
        without waiting on each other or taking the same fixture.
        """
        rows = await self._db.fetch_in_transaction(
            "claiming fixtures",
            [
                (_WORKER_HEARTBEAT, {"owner": owner, "held": held}),
                (_CLAIM, {"owner": owner, "ttl": ttl, "held": held,
                          "cap": max_fixtures if max_fixtures is not None else 2**31 - 1}),
            ],
        )  # fmt: skip
        return [row[0] for row in rows]

    async def fair_share(self, owner: str, ttl: float) -> int:
        rows = await self._db.fetch(
            "reading the fair share", _FAIR_SHARE, {"owner": owner, "ttl": ttl}
        )
        return int(rows[0][0])

    async def renew_leases(
        self, owner: str, ttl: float, fixture_ids: Sequence[uuid.UUID]
    ) -> list[uuid.UUID]:
        """Extend this worker's leases; the fixtures not returned are no longer ours."""
        rows = await self._db.fetch_in_transaction(
            "renewing leases",
            [
                (_WORKER_HEARTBEAT, {"owner": owner, "held": len(fixture_ids)}),
                (LOCK_IN_ORDER, {"ids": list(fixture_ids)}),
                (
                    """
                    UPDATE fixtures SET lease_expires_at = now() + make_interval(secs => :ttl)
                    WHERE owner = :owner AND fixture_id = ANY(CAST(:ids AS uuid[]))
                    RETURNING fixture_id
                    """,
                    {"owner": owner, "ttl": ttl, "ids": list(fixture_ids)},
                ),
            ],
        )
        return [row[0] for row in rows]

    async def release_leases(
        self, owner: str, fixture_ids: Sequence[uuid.UUID] | None = None
    ) -> None:
        """Give fixtures back (all of this worker's when ``fixture_ids`` is None)."""
        mine = (
            "owner = :owner "
            "AND (CAST(:ids AS uuid[]) IS NULL OR fixture_id = ANY(CAST(:ids AS uuid[])))"
        )
        params = {"owner": owner, "ids": list(fixture_ids) if fixture_ids is not None else None}
        await self._db.fetch_in_transaction(
            "releasing leases",
            [
                (f"SELECT 1 FROM fixtures WHERE {mine} ORDER BY fixture_id FOR UPDATE", params),
                (f"UPDATE fixtures SET owner = NULL, lease_expires_at = NULL WHERE {mine}", params),
            ],
        )
        if fixture_ids is None:
            await self._db.execute(
                "leaving the worker list", "DELETE FROM workers WHERE worker_id = :owner",
                {"owner": owner},
            )  # fmt: skip
