"""The one retry policy: exponential backoff with full jitter, database calls retried through an
outage up to ``RunOptions.db_give_up_after`` (then exit 75), and connection attempts spaced out
across every fixture (:class:`RateLimiter`)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ingest.errors import DatabaseUnavailable, TemporaryError
from ingest.settings import RunOptions

log = logging.getLogger(__name__)

T = TypeVar("T")


async def with_database_retries(
    call: Callable[[], Awaitable[T]],
    options: RunOptions,
    *,
    what: str,
    on_outage: Callable[[float | None], None] | None = None,
    failed: DatabaseUnavailable | None = None,
) -> T:
    """Call, retrying with backoff while the database is unavailable; give up (exit 75) after
    ``db_give_up_after`` seconds. ``on_outage`` hears when an outage starts (monotonic time)
    and ends (None). ``failed``: the caller's own first call already failed so (a hot path that
    calls once without this machinery, and comes here only then): the outage starts with it."""
    attempt = 0
    started: float | None = None
    while True:
        if failed is None:
            try:
                result = await call()
            except DatabaseUnavailable as exc:
                failed = exc
            else:
                break
        now = time.monotonic()
        if started is None:
            started = now
            log.warning("%s: database unavailable, retrying: %s", what, failed)
            if on_outage is not None:
                on_outage(now)
        elif now - started > options.db_give_up_after:
            raise TemporaryError(
                f"the database has been unavailable for {now - started:.0f} s: {failed}"
            ) from None
        failed = None
        await asyncio.sleep(backoff_delay(attempt, options.backoff_initial, options.db_backoff_max))
        attempt += 1
    if started is not None:
        log.info("%s: database back after %.1f s", what, time.monotonic() - started)
        if on_outage is not None:
            on_outage(None)
    return result


def backoff_delay(attempt: int, initial: float, cap: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, initial * 2**attempt)]."""
    return random.uniform(0, min(cap, initial * (2 ** min(attempt, 30))))


class RateLimiter:
    """Spaces out connection attempts across every fixture (the provider asks for <= 5/s)."""

    def __init__(self, per_second: float) -> None:
        self._interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)
