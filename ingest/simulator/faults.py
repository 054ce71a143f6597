"""What the simulator can be told to do wrong: the faults, and the bad frames it sends.

Global or per fixture, set by flags or at run time through the control endpoint (``POST
/_control/faults``): drop the connection after N packets (a clean close or an abrupt TCP reset),
stall without packets or heartbeats (pings are still answered, as by most servers), send
malformed frames or hostile ones (:data:`HOSTILE`), refuse new connections (HTTP 503), refuse
the token; and in a live stream, stamp packets later than they happened (``delay_seconds``) or
suspend the provider's collection (``suspend_after`` packets, for ``suspend_seconds``: a Status
Updated packet saying CollectionSuspended, nothing for a while, then one saying CollectingLive;
:class:`ingest.simulator.connection.LiveStream` keeps the numbering whole).

Run-time only (``POST /_control/faults``): ``stall_now`` (seconds: the fixture's open
connections go silent now), ``suspend_now`` (seconds: the provider suspends the fixture's
collection now for that long; 0 lifts a suspension now).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Literal

MALFORMED: tuple[tuple[bytes, bool], ...] = (
    (b'{"fixtureAction": {"fixtureSeqNum": ', False),  # truncated JSON
    (b"\x00\x01binary\xff", True),  # a binary frame
    (b'[{"fixtureAction": {}}]', False),  # a JSON array
)
# Frames built to break a client: each must be rejected, and none may stop it or change a row.
HOSTILE: tuple[tuple[bytes, bool], ...] = (
    (b"[" * 100_000 + b"]" * 100_000, False),  # nested beyond any parser's limit
    (b'{"fixtureAction": {"action": {}, "fixtureSeqNum": null, "id": null}}', False),
    (b'{"fixtureAction": {"actionId": "h", "fixtureSeqNum": "abc"}}', False),
    (b'{"fixtureAction": {"actionId": "h", "fixtureSeqNum": 0}}', False),
    (b'{"fixtureAction": {"actionId": "h", "fixtureSeqNum": -5}}', False),
    (b'{"fixtureAction": {"actionId": "h", "fixtureSeqNum": 1.5}}', False),
    (b'{"fixtureAction": {"actionId": "h", "fixtureSeqNum": true}}', False),
    (b'{"fixtureAction": {"actionId": "h", "fixtureSeqNum": 1180591620717411303424}}', False),
    (b'{"fixtureAction": {"actionId": "h", "fixtureSeqNum": NaN}}', False),
    (b'{"fixtureAction": {"actionId": "\\ud800", "fixtureSeqNum": "\\u0000"}}', False),
    (b'{"fixtureAction": {"actionId": "unnumbered in a numbered feed"}}', False),
    (b'{"fixtureAction": {"fixtureSeqNum": "big", "x": "' + b"x" * 2_000_000 + b'"}}', False),
    (b'{"fixtureAction": [1, 2, 3]}', False),
    (b"\xff\xfe not UTF-8 \x00", False),
    (bytes(range(256)) * 64, True),  # binary
)


@dataclass
class Faults:
    """What to do wrong. Counts are per connection; times are seconds."""

    drop_after: int | None = None  # close each connection after this many packets
    drop_mode: Literal["close", "reset"] = "close"  # a close frame, or an abrupt TCP reset
    stall_after: int | None = None  # after this many packets on a connection, go silent ...
    stall_seconds: float = 0.0  # ... for this long: no packets, no heartbeats
    malformed_every: int | None = None  # send a malformed frame after every N packets
    hostile_every: int | None = None  # send one of HOSTILE after every N packets
    refuse_until: float = 0.0  # time.monotonic() before which new connections get HTTP 503
    refuse_token: bool = False  # refuse every token, as after its expiry
    delay_seconds: float = 0.0  # live: each packet's timestamp this long before it is sent
    suspend_after: int | None = None  # live: after the fixture's Nth packet, suspend ...
    suspend_seconds: float = 0.0  # ... its collection for this long (CollectionSuspended)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a JSON body from the control endpoint (``refuse_seconds`` is relative)."""
        changes = dict(changes)
        if "refuse_seconds" in changes:
            changes["refuse_until"] = time.monotonic() + float(changes.pop("refuse_seconds"))
        names = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(sorted(unknown))}")
        for name, value in changes.items():
            setattr(self, name, value)
