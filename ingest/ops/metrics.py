"""Prometheus metrics of one worker process (standard ``prometheus_client``).

Served on ``--metrics-port`` (with ``/healthz`` and ``/readyz``) or written to a textfile-collector
file with ``--metrics-file`` for oneshot runs.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, write_to_textfile
from prometheus_client.exposition import generate_latest


class Metrics:
    """Everything the worker counts. One instance per process, with its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.packets_stored = Counter(
            "ingest_packets_stored", "Action packets stored (new rows)", registry=r
        )
        self.duplicates = Counter(
            "ingest_duplicates", "Packets received again and absorbed", registry=r
        )
        self.rejected = Counter("ingest_rejected", "Frames kept in rejected_messages", registry=r)
        self.rejected_unstored = Counter(
            "ingest_rejected_unstored",
            "Rejected frames over the per-fixture rate: counted, not stored",
            registry=r,
        )
        self.blocked = Gauge(
            "ingest_blocked_fixtures",
            "Fixtures stuck behind a frame over the size limit",
            registry=r,
        )
        self.gaps = Counter("ingest_gaps", "Seq jumps seen in a stream", registry=r)
        self.conflicts = Counter(
            "ingest_conflicts", "Replayed seqs with a different payload", registry=r
        )
        self.reconnects = Counter(
            "ingest_reconnects", "Connections lost and retried", ["reason"], registry=r
        )
        self.buffer_bytes = Gauge(
            "ingest_buffer_bytes",
            "Bytes received and waiting to be committed (bounded by --max-buffer)",
            registry=r,
        )
        self.fixtures = Gauge(
            "ingest_fixtures", "This worker's fixtures by state", ["state"], registry=r
        )
        self.connected = Gauge(
            "ingest_connected_fixtures", "Fixtures with an open feed connection", registry=r
        )
        self.batch_size = Histogram(
            "ingest_batch_size",
            "Packets per committed batch",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
            registry=r,
        )
        self.commit_seconds = Histogram(
            "ingest_commit_seconds",
            "Time to commit one batch",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.lag_seconds = Histogram(
            "ingest_lag_seconds",
            "From a packet's arrival to its commit",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30),
            registry=r,
        )
        self.last_packet = Gauge(
            "ingest_last_packet_timestamp_seconds",
            "When the last packet of any fixture was committed (Unix time)",
            registry=r,
        )

        self.betting_suspended = Gauge(
            "ingest_betting_suspended_fixtures",
            "This worker's fixtures whose betting status is suspended, by reason (fixture_betting)",
            ["reason"],
            registry=r,
        )
        self.summary_disagreements = Gauge(
            "ingest_summary_disagreement_fixtures",
            "Fixtures whose latest fixtureSummary disagrees with our views (summary_mismatches)",
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def write_textfile(self, path: Path) -> None:
        """Write for node_exporter's textfile collector (atomically: temp file, then rename)."""
        write_to_textfile(str(path), self.registry)


class SettlerMetrics:
    """What ``ingest settle`` counts (same exposition and textfile as the worker's)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "ingest_settlement_events", "Settlement events written", ["kind"], registry=r
        )
        self.passes = Counter(
            "ingest_settlement_passes", "Fixture settlement transactions committed", registry=r
        )
        self.held = Gauge(
            "ingest_settlement_fixtures_on_hold", "Fixtures whose settlement waits", registry=r
        )
        self.followed = Gauge(
            "ingest_settlement_fixtures", "Fixtures the settler follows", registry=r
        )
        self.reconnects = Counter(
            "ingest_settlement_listen_reconnects", "LISTEN connections lost and renewed",
            registry=r,
        )  # fmt: skip
        self.lag_seconds = Histogram(
            "ingest_settlement_lag_seconds",
            "From a NOTIFY ingest_actions to the settlement commit",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30),
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def write_textfile(self, path: Path) -> None:
        write_to_textfile(str(path), self.registry)
