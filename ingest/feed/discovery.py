"""Fixture discovery: the provider's REST list of snooker fixtures (``GET {api}/snooker/fixtures``).

The response is read tolerantly: a JSON list, or an object holding the list under ``fixtures``,
``items`` or ``data``; each entry's id is ``fixtureId`` or ``id``. Entries without a UUID are
skipped with a warning.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import aiohttp

from ingest.errors import AuthError, ConfigError, FeedUnavailable
from ingest.settings import Secret

log = logging.getLogger(__name__)


async def list_fixtures(
    session: aiohttp.ClientSession,
    api_url: str,
    token: Secret,
    *,
    live: bool = False,
    date_from: str | None = None,
    date_to: str | None = None,
) -> list[uuid.UUID]:
    """The fixture ids the provider lists (with its filters), in its order."""
    url = f"{api_url.rstrip('/')}/snooker/fixtures"
    params: dict[str, str] = {}
    if live:
        params["live"] = "true"
    if date_from:
        params["dateFrom"] = date_from
    if date_to:
        params["dateTo"] = date_to
    headers = {
        "Accept": "application/json",
        "Authorization": f"Bearer {token.reveal()}",
    }
    try:
        async with session.get(
            url, params=params, headers=headers, timeout=aiohttp.ClientTimeout(total=30)
        ) as response:
            if response.status in (401, 403):
                raise AuthError(
                    f"the fixtures API refused the access token (HTTP {response.status})"
                )
            if response.status in (400, 404):
                raise ConfigError(f"the fixtures API answered HTTP {response.status} for {url}")
            if response.status >= 300:
                raise FeedUnavailable(
                    f"the fixtures API answered HTTP {response.status}", reason="http"
                )
            body: Any = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise FeedUnavailable(f"cannot list fixtures at {url}: {exc}", reason="network") from None
    except ValueError:
        raise FeedUnavailable(f"the fixtures API at {url} did not answer JSON") from None
    return _ids(body)


def _ids(body: Any) -> list[uuid.UUID]:
    entries = body
    if isinstance(body, dict):
        entries = next(
            (body[k] for k in ("fixtures", "items", "data") if isinstance(body.get(k), list)), []
        )
    if not isinstance(entries, list):
        return []
    found: list[uuid.UUID] = []
    for entry in entries:
        raw = entry.get("fixtureId", entry.get("id")) if isinstance(entry, dict) else entry
        try:
            found.append(uuid.UUID(str(raw)))
        except ValueError:
            log.warning("fixtures API: skipping an entry without a fixture id: %.200r", entry)
    return found
