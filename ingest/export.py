"""Stored matches out of the database: JSON-lines recordings, and Recordings the simulator serves.

A stored match is its ``actions`` rows in seq order, one packet per line, each exactly the payload
received as a JSON value (``payload`` is jsonb: PostgreSQL keeps the value and normalises its key
order and whitespace). Rejected frames and conflicting replays are not packets of the match and
are not exported. Pacing comes from each packet's own ``fixtureAction.timestamp``, as for any
recording.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from ingest.errors import ConfigError, UnknownFixture
from ingest.simulator.recording import Recording


class PacketStore(Protocol):
    async def finished_fixtures(self) -> list[uuid.UUID]: ...

    async def stored_packets(self, fixture_id: uuid.UUID) -> list[str]: ...


async def stored_recordings(
    store: PacketStore, fixture_ids: Sequence[uuid.UUID] | None = None
) -> list[Recording]:
    """The named fixtures (every finished one when none are named) as Recordings."""
    ids = list(dict.fromkeys(fixture_ids)) if fixture_ids else await store.finished_fixtures()
    if not ids:
        raise ConfigError(
            "no finished match is stored in this database: name the fixtures to serve"
        )
    recordings = []
    for fixture_id in ids:
        packets = await store.stored_packets(fixture_id)
        if not packets:
            raise UnknownFixture(f"no packets of fixture {fixture_id} are stored in this database")
        recordings.append(
            Recording.from_lines(packets, fixture_id=fixture_id, name=str(fixture_id))
        )
    return recordings


def write_recordings(recordings: Sequence[Recording], output: str) -> list[str]:
    """Write each recording as ``<fixture_id>.jsonl`` in the directory ``output`` (atomically:
    a file is complete or absent), or to standard output for ``-`` (one fixture only).
    Returns where each went."""
    if output == "-":
        if len(recordings) != 1:
            raise ConfigError(
                f"--output - writes one fixture, {len(recordings)} were given: "
                "give a directory for several"
            )
        sys.stdout.write(_text(recordings[0]))
        sys.stdout.flush()
        return ["-"]
    folder = Path(output)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the directory {folder}: {exc.strerror}") from None
    written = []
    for recording in recordings:
        path = folder / f"{recording.fixture_id}.jsonl"
        try:
            fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                    handle.write(_text(recording))
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
        written.append(str(path))
    return written


def _text(recording: Recording) -> str:
    return "".join(line + "\n" for line in recording.lines)
