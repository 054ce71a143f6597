"""JSON-lines recordings: one Action packet per line, as the feed sends them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

from ingest.errors import ConfigError

DEMO_RECORDING = "demo-match.jsonl"


@dataclass(frozen=True)
class Recording:
    """A fixture's packets as text lines, with each packet's provider time for paced replay."""

    fixture_id: uuid.UUID
    lines: tuple[str, ...]
    times: tuple[float | None, ...]  # POSIX seconds of each packet's timestamp, when it has one

    @property
    def finished(self) -> bool:
        return bool(self.lines) and '"finished":true' in self.lines[-1].replace(" ", "")

    @classmethod
    def from_text(
        cls, text: str, *, fixture_id: uuid.UUID | None = None, name: str = ""
    ) -> Recording:
        # split on newlines only: str.splitlines() would also split inside a packet at a
        # U+2028, U+0085 or \x1c in a string, which JSON (and PostgreSQL's jsonb) leave as they are
        return cls.from_lines(text.split("\n"), fixture_id=fixture_id, name=name)

    @classmethod
    def from_lines(
        cls, raw: Iterable[str], *, fixture_id: uuid.UUID | None = None, name: str = ""
    ) -> Recording:
        """One packet per item (each a line of a recording, or a stored payload)."""
        lines = tuple(line.removesuffix("\r") for line in raw if line.strip())
        times: list[float | None] = []
        found: uuid.UUID | None = None
        for number, line in enumerate(lines, 1):
            try:
                packet = json.loads(line)
            except ValueError:  # a malformed line is served as it is: that is a test of the client
                times.append(None)
                continue
            action = packet.get("fixtureAction") if isinstance(packet, dict) else None
            action = action if isinstance(action, dict) else {}
            times.append(_posix(action.get("timestamp")))
            if found is None and isinstance(action.get("fixtureId"), str):
                try:
                    found = uuid.UUID(action["fixtureId"])
                except ValueError:
                    raise ConfigError(f"{name}:{number}: fixtureId is not a UUID") from None
        fixture = fixture_id or found
        if fixture is None:
            raise ConfigError(f"{name}: no fixtureId in the recording; give one as ID=PATH")
        return cls(fixture, lines, tuple(times))

    @classmethod
    def load(cls, spec: str) -> Recording:
        """``PATH`` or ``FIXTURE_ID=PATH``."""
        fixture_id: uuid.UUID | None = None
        path = spec
        if "=" in spec:
            head, _, path = spec.partition("=")
            try:
                fixture_id = uuid.UUID(head)
            except ValueError:
                raise ConfigError(f"{spec!r}: expected FIXTURE_ID=PATH with a UUID") from None
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the recording {path}: {exc.strerror}") from None
        return cls.from_text(text, fixture_id=fixture_id, name=path)

    @classmethod
    def generated(cls, seed: int, *, best_of: int = 7) -> Recording:
        """A match generated from ``seed`` (fixture id derived from the seed)."""
        from ingest.simulator.generator import MatchSpec, generate_match, to_jsonl

        match = generate_match(MatchSpec(seed=seed, best_of=best_of))
        return cls.from_text(to_jsonl(match.packets), name=f"seed {seed}")

    @classmethod
    def demo(cls) -> Recording:
        text = resources.files("ingest.simulator").joinpath("data", DEMO_RECORDING).read_text()
        return cls.from_text(text, name=DEMO_RECORDING)


def _posix(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None
