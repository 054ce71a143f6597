"""The ``script`` reference: the program a user would write in an afternoon instead of ours.

aiohttp for the feed, asyncpg for the database, one task per fixture, one writer that inserts
whatever has been received since its last insert as one ``unnest`` statement (payload only, no
typed columns, no conflict records, no notifications). Resumes from ``max(seq)``; with
``--until-finished`` it exits once every fixture has sent its finished packet.

``python -m bench.script DATABASE_URL FEED_URL [--until-finished] [--batch-wait SECONDS]
FIXTURE_ID ...`` (``--batch-wait``: a lone packet waits that long for company, as ours does
with the option); the token is read from ``INGEST_TOKEN``. Kept deliberately plain: it is the
yardstick, not a product. Of the two references it is the stronger at a live load
(``bench/careful.py``, issue 23's program, writes each socket's packets apart: twice the CPU
here, see its docstring).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime

import aiohttp
import asyncpg

ACCEPT = "application/vnd.imggaming.dde.api+json;version=1"  # the feed requires it

INSERT = """
    INSERT INTO actions (fixture_id, seq, payload, received_at)
    SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::jsonb[], $4::timestamptz[])
    ON CONFLICT (fixture_id, seq) DO NOTHING
"""


async def main(
    db_url: str, feed: str, until_finished: bool, fixtures: list[str], hold: float = 0.0
) -> None:
    db = await asyncpg.connect(db_url)
    queue: asyncio.Queue[tuple[str, int, str, datetime]] = asyncio.Queue()
    token = os.environ["INGEST_TOKEN"]
    starts = dict(
        await db.fetch(
            "SELECT f::text, coalesce((SELECT max(seq) FROM actions WHERE fixture_id = f), 0) "
            "FROM unnest($1::uuid[]) AS f",
            fixtures,
        )
    )

    async def follow(http: aiohttp.ClientSession, fixture: str) -> None:
        position = starts[fixture]
        speed = "fast" if until_finished else "normal"
        async with http.ws_connect(
            f"{feed}/snooker/fixtures/{fixture}/actions",
            params={"startPosition": str(position), "speed": speed},
            headers={"Accept": ACCEPT},
            max_msg_size=0,
        ) as ws:
            await ws.send_str(json.dumps({"authToken": token}))
            async for msg in ws:
                packet = json.loads(msg.data)
                action = packet.get("fixtureAction")
                if action is None:
                    continue  # heartbeats, acknowledgements
                position += 1
                seq = action.get("fixtureSeqNum", position)
                queue.put_nowait((fixture, seq, msg.data, datetime.now(UTC)))
                if packet.get("finished") and until_finished:
                    return

    async def write() -> None:
        while True:
            rows = [await queue.get()]
            if hold and queue.empty():  # --batch-wait: a lone packet waits for company
                await asyncio.sleep(hold)
            while not queue.empty():
                rows.append(queue.get_nowait())
            await db.execute(INSERT, *(list(column) for column in zip(*rows, strict=True)))
            for _ in rows:
                queue.task_done()

    writer = asyncio.create_task(write())
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        await asyncio.gather(*(follow(http, f) for f in fixtures))
    await queue.join()  # everything received is stored
    writer.cancel()
    await db.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    finished = "--until-finished" in args
    args = [a for a in args if a != "--until-finished"]
    hold = 0.0
    if "--batch-wait" in args:  # the same hold as ours, to compare ours under it fairly
        at = args.index("--batch-wait")
        hold = float(args[at + 1])
        del args[at : at + 2]
    asyncio.run(main(args[0], args[1], finished, args[2:], hold))
