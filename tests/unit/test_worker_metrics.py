"""The worker's metrics exist only when something can read them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ingest.commands import _worker_metrics
from ingest.ops.metrics import Metrics
from ingest.settings import Monitoring


def test_metrics_are_made_only_for_a_port_or_a_file(tmp_path: Path) -> None:
    assert _worker_metrics(Monitoring()) is None
    assert isinstance(_worker_metrics(Monitoring(metrics_port=9464)), Metrics)
    assert isinstance(_worker_metrics(Monitoring(metrics_file=tmp_path / "m.prom")), Metrics)


def test_the_run_path_does_not_load_prometheus_client() -> None:
    """Everything `ingest run` imports before it knows whether metrics are read."""
    code = (
        "import sys, ingest.cli, ingest.commands, ingest.worker.supervisor; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prometheus_client'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
