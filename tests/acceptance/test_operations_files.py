"""deploy/prometheus and deploy/grafana, held to the worker they watch.

Every metric the alert rules and the dashboard name is one that a real worker exports: ``ingest
run`` streams a match from the simulator and its metrics file is read. promtool checks the rules
and the scrape configuration and runs the rules' unit tests; blackbox_exporter probes a real
worker's /readyz with the modules the probe alerts rely on, before, during and after a real
database outage. Tests that need promtool or blackbox_exporter (Debian's ``prometheus`` and
``prometheus-blackbox-exporter``) are skipped, saying so, without them.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import yaml

from tests.acceptance.test_cli import cli, cli_env, start_cli
from tests.acceptance.test_ops import free_port
from tests.conftest import TOKEN, StartSimulator, pg_ctl, wait_until

if TYPE_CHECKING:
    from ingest.simulator.recording import Recording

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yml"
BLACKBOX = PROMETHEUS / "blackbox.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "snooker-ingest.json"
PROVISIONING = GRAFANA / "provisioning" / "dashboards" / "snooker-ingest.yml"

# the only names the rules and the dashboard may take from something other than the worker
NOT_THE_WORKERS = {
    "up": "Prometheus itself, one series per scrape target",
    "probe_success": "blackbox_exporter, probing /readyz (deploy/prometheus/blackbox.yml)",
    "node_textfile_mtime_seconds": "node_exporter's textfile collector (the backfill timer)",
}

# --------------------------------------------------------------------------------------------
# reading PromQL, the exposition format and Markdown headings
# --------------------------------------------------------------------------------------------

_PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords and labels left out).

    Grafana's variables (``$instance``, ``$__rate_interval``) only occur inside strings and
    brackets, which are removed first, as are label matchers and the label lists of ``by``,
    ``without``, ``on``, ``ignoring`` and ``group_left/right``.
    """
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", text):
        word = match.group(0)
        followed_by_call = re.match(r"\s*\(", text[match.end() :])
        if word.lower() in _PROMQL_KEYWORDS or followed_by_call:
            continue
        names.add(word)
    return names


def exposed_names(exposition: str) -> set[str]:
    """The names in a Prometheus text exposition: every sample's, and every family declared by
    a ``# TYPE`` line (a labelled counter that never counted has no sample, only its TYPE)."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind in ("histogram", "summary"):
                names.update(f"{name}{s}" for s in ("_bucket", "_sum", "_count"))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def exposed_families(exposition: str) -> set[str]:
    """The metric families, without prometheus_client's ``_created`` timestamps of each."""
    declared = {line.split()[2] for line in exposition.splitlines() if line.startswith("# TYPE ")}
    return {
        name
        for name in declared
        if not (name.endswith("_created") and declared & {name[:-8], name[:-8] + "_total"})
    }


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings."""
    anchors = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading and not in_code:
            title = heading.group(1).strip().lower()
            anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return anchors


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    found = []
    for panel in panels:
        found.append(panel)
        found += dashboard_panels(panel.get("panels", []))
    return found


def dashboard_queries() -> dict[str, str]:
    """What the dashboard asks Prometheus: each panel target's expr, and the variables' queries."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = {}
    for panel in dashboard_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            queries[f"panel {panel['id']} {panel['title']!r} {target['refId']}"] = target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            queries[f"variable {variable['name']!r}"] = inner.group(1) if inner else query
    return queries


def test_the_readers_themselves() -> None:
    expr = (
        'sum by (instance, job) (increase(ingest_commit_seconds_count{le="x{y}"}[10m])'
        ' - ignoring (le) increase(ingest_commit_seconds_bucket{le="2.5"}[10m]))'
        ' > 0 and on (instance) absent(up{job="snooker-ingest"}) offset 5m'
        ' or histogram_quantile(0.99, rate(made_up_total{i=~"$instance"}[$__rate_interval]))'
    )
    assert promql_metric_names(expr) == {
        "ingest_commit_seconds_count", "ingest_commit_seconds_bucket", "up", "made_up_total",
    }  # fmt: skip
    assert promql_metric_names("time() - (last_seen > 0) > 1e3") == {"last_seen"}
    exposition = (
        "# HELP a_total A\n# TYPE a_total counter\na_total 1.0\n# TYPE a_created gauge\n"
        "a_created 1.7e9\n"
        "# HELP r_total R\n# TYPE r_total counter\n"
        "# HELP h H\n# TYPE h histogram\n"
        'h_bucket{le="1.0"} 0.0\n'
    )
    names = exposed_names(exposition)
    assert {"a_total", "a_created", "r_total", "h_bucket", "h_sum", "h_count"} <= names
    assert "h" in names and "r" not in names and exposed_families(exposition) == {
        "a_total", "r_total", "h",
    }  # fmt: skip
    assert github_anchors("## Reconciliation with the provider's summary\n### Watching: `x y`") == {
        "reconciliation-with-the-providers-summary",
        "watching-x-y",
    }


# --------------------------------------------------------------------------------------------
# the names, against a real worker's metrics
# --------------------------------------------------------------------------------------------


async def test_alerts_and_dashboard_name_only_metrics_a_real_worker_exports(
    start_simulator: StartSimulator, database_url: str, recording: Recording, tmp_path: Path
) -> None:
    sim = await start_simulator([recording], drop_after=60)  # reconnects, with their reason
    prom = tmp_path / "ingest.prom"
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=sim.url, INGEST_TOKEN=TOKEN)
    done = await cli("run", str(recording.fixture_id), "--until-finished", "--speed", "fast",
                     "--metrics-file", str(prom), env=env)  # fmt: skip
    assert done.code == 0, done.stderr
    exposition = prom.read_text()
    exported = exposed_names(exposition)
    assert 'ingest_reconnects_total{reason="closed"}' in exposition  # the run was a real one
    assert not [n for n in NOT_THE_WORKERS if n.startswith("ingest_")]

    expressions = {f"alert {r['alert']}": r["expr"] for r in alert_rules()}
    expressions.update(dashboard_queries())
    assert len(expressions) > 30, expressions
    unknown = {}
    for where, expr in expressions.items():
        names = promql_metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        if names - exported - NOT_THE_WORKERS.keys():
            unknown[where] = sorted(names - exported - NOT_THE_WORKERS.keys())
    assert not unknown, f"metrics the worker does not export: {unknown}"

    # and the other way round: the dashboard shows every metric the worker has
    on_dashboard = set().union(*map(promql_metric_names, dashboard_queries().values()))
    missing = {
        family
        for family in exposed_families(exposition)
        if not {family, f"{family}_bucket", f"{family}_count", f"{family}_sum"} & on_dashboard
    }
    assert not missing, f"exported but on no dashboard panel: {sorted(missing)}"


# --------------------------------------------------------------------------------------------
# the rules: annotations, runbooks, unit tests, promtool
# --------------------------------------------------------------------------------------------


def test_every_alert_has_a_severity_a_runbook_that_exists_and_a_unit_test() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)) and len(names) >= 10, names
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        notes = rule["annotations"]
        assert notes["summary"] and len(notes["description"]) > 80, rule["alert"]
        path, _, anchor = notes["runbook_url"].partition("#")
        target = ROOT / path
        assert target.is_file() and path.endswith("README.md"), (rule["alert"], path)
        assert anchor in github_anchors(target.read_text()), (rule["alert"], notes["runbook_url"])
    tested = {
        case["alertname"]
        for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert set(names) - tested == set(), "alerts no unit test sees firing"


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return subprocess.run(
        [promtool, *map(str, args)], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60
    )


def test_promtool_checks_the_rules_and_the_scrape_configuration() -> None:
    rules = _promtool("check", "rules", ALERTS)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in rules.stdout
    config = _promtool("check", "config", PROMETHEUS / "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_runs_the_rules_unit_tests() -> None:
    done = _promtool("test", "rules", ALERTS_TEST)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


# --------------------------------------------------------------------------------------------
# the dashboard
# --------------------------------------------------------------------------------------------


def test_the_dashboard_and_its_provisioning() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard_panels(dashboard["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = [p["title"] for p in panels]
    assert len(titles) == len(set(titles)), "panel titles must be unique"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    graphs = [p for p in panels if p["type"] != "row"]
    assert len(graphs) >= 10
    for panel in graphs:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel
    # the panels sit on Grafana's 24-column grid without overlapping
    cells = set()
    for panel in panels:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        area = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & area, f"{panel['title']!r} overlaps another panel"
        cells |= area

    provisioning = yaml.safe_load(PROVISIONING.read_text())
    assert provisioning["apiVersion"] == 1
    (provider,) = provisioning["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    deploy_readme = (ROOT / "deploy" / "README.md").read_text()
    assert provider["options"]["path"] in deploy_readme, "deploy/README.md says where it goes"


# --------------------------------------------------------------------------------------------
# the /readyz probes, by the real blackbox_exporter against a real worker
# --------------------------------------------------------------------------------------------


async def test_the_database_probe_succeeds_only_while_the_database_is_away(
    start_simulator: StartSimulator, own_server: tuple[str, Path], recording: Recording
) -> None:
    exporter = shutil.which("prometheus-blackbox-exporter") or shutil.which("blackbox_exporter")
    if exporter is None:
        pytest.skip(
            "blackbox_exporter is not installed (apt-get install prometheus-blackbox-exporter)"
        )
    url, pgdata = own_server
    sim = await start_simulator([recording])  # recorded pacing: the worker stays connected
    port, probe_port = free_port(), free_port()
    env = cli_env(INGEST_DATABASE_URL=url, INGEST_FEED_URL=sim.url, INGEST_TOKEN=TOKEN)
    worker = await start_cli("run", str(recording.fixture_id), "--metrics-port", str(port),
                             env=env)  # fmt: skip
    blackbox = await asyncio.create_subprocess_exec(
        exporter, f"--config.file={BLACKBOX}", f"--web.listen-address=127.0.0.1:{probe_port}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    readyz = f"http://127.0.0.1:{port}/readyz"
    try:
        async with aiohttp.ClientSession() as http:

            async def probe(module: str) -> float | None:
                """probe_success of one probe, None while the exporter is not listening."""
                try:
                    async with http.get(
                        f"http://127.0.0.1:{probe_port}/probe",
                        params={"module": module, "target": readyz},
                    ) as r:
                        text = await r.text()
                except aiohttp.ClientError:
                    return None
                (value,) = re.findall(r"^probe_success (\S+)$", text, re.MULTILINE)
                return float(value)

            async def probes_read(ready: float, database_down: float) -> bool:
                return (await probe("ingest_ready"), await probe("ingest_database_down")) == (
                    ready,
                    database_down,
                )

            await wait_until(lambda: probes_read(ready=1, database_down=0))
            await asyncio.to_thread(pg_ctl, pgdata, "stop")
            await wait_until(lambda: probes_read(ready=0, database_down=1))
            async with http.get(readyz) as r:
                assert r.status == 503 and "database" in (await r.json())["detail"]
            await asyncio.to_thread(pg_ctl, pgdata, "start")
            await wait_until(lambda: probes_read(ready=1, database_down=0))
        worker.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(worker.communicate(), 10)
        assert worker.returncode == 0, err.decode()
    finally:
        for proc in (worker, blackbox):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
