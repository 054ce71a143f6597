"""Watching the provider's own ``fixtureSummary`` against our views (``summary_mismatches``),
off the write path: every ``summary_interval`` seconds, for the fixtures that stored packets
since the last look; a warning when a fixture starts to disagree and when it agrees again."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING

from ingest.errors import IngestError
from ingest.settings import RunOptions
from ingest.worker.ports import Reconciler
from ingest.worker.progress import FixtureStats

if TYPE_CHECKING:  # metrics are made only when read (--metrics-port, --metrics-file)
    from ingest.ops.metrics import Metrics

log = logging.getLogger(__name__)


class SummaryWatch:
    def __init__(
        self,
        reconciler: Reconciler | None,
        stats: dict[uuid.UUID, FixtureStats],
        options: RunOptions,
        metrics: Metrics | None,
    ) -> None:
        self._reconciler = reconciler
        self._stats = stats
        self._options = options
        self._metrics = metrics
        self._reconciled: dict[uuid.UUID, int] = {}  # fixture -> packets stored when compared
        self._disagreeing: set[uuid.UUID] = set()

    @property
    def disagreeing(self) -> set[uuid.UUID]:
        """Fixtures whose latest summary disagreed with our views at the last look."""
        return set(self._disagreeing)

    async def check(self) -> None:
        """Compare the fixtures that stored packets since the last look with the provider's
        summary; warn once when a fixture starts to disagree and once when it agrees again."""
        if self._reconciler is None:
            return
        changed = [f for f, s in self._stats.items() if self._reconciled.get(f) != s.stored]
        if not changed:
            return
        stored = {f: self._stats[f].stored for f in changed}
        found = await self._reconciler.fixtures_in_disagreement(changed)
        for fixture_id in changed:
            self._reconciled[fixture_id] = stored[fixture_id]
            rows = found.get(fixture_id)
            if rows and fixture_id not in self._disagreeing:
                self._disagreeing.add(fixture_id)
                log.warning(
                    "fixture %s: the provider's fixtureSummary at seq %d disagrees with our "
                    "views: %s; settlement holds this fixture until they agree",
                    fixture_id,
                    rows[0]["seq"],
                    "; ".join(
                        f"{r['field']} ours {r['ours']} provider {r['provider']}" for r in rows
                    ),
                )
            elif not rows and fixture_id in self._disagreeing:
                self._disagreeing.discard(fixture_id)
                log.warning(
                    "fixture %s: the provider's fixtureSummary agrees with our views again "
                    "(seq %d)",
                    fixture_id,
                    self._stats[fixture_id].last_seq,
                )
        if self._metrics is not None:
            self._metrics.summary_disagreements.set(len(self._disagreeing))

    async def check_forever(self) -> None:
        while True:
            await asyncio.sleep(self._options.summary_interval)
            try:
                await self.check()
            except IngestError as exc:  # an alarm, not the write path: never worth stopping for
                log.debug("summaries not compared: %s", exc)
