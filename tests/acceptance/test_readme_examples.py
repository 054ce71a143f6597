"""What the README promises, held by tests (issue 26): every example a user copies, run as
written against the real ``ingest`` command, and its result checked against the truth of the
generated match.

- The ```sql blocks of "Querying" and "Settlement events", extracted from README.md at test time,
  run by ``psql -v fixture_id=... -v frame_number=3 -f query.sql`` (when psql is installed) and
  by asyncpg after the same substitution of psql variables, against a database holding two
  matches ingested by ``ingest run --until-finished --speed fast`` and settled by ``ingest
  settle --until-finished``. Each statement is checked by the key phrase of its first comment
  line: a statement without a check, or a check without its statement, fails.
- The two ```python LISTEN examples, with the placeholder URL replaced by the test database's,
  in a subprocess, while a match is ingested (settled): every line they print is checked.
- The ```sh walk-throughs of "The feed simulator and the match generator" and "Replaying stored
  matches", run by ``bash -e`` with the database URL, the fixture ids and the ports substituted
  (the token as written); whatever they leave running is stopped at the end, failure or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from ingest.simulator.generator import GeneratedMatch, MatchSpec, generate_match, to_jsonl
from ingest.simulator.recording import Recording
from tests.acceptance.test_cli import Done, cli, cli_env, start_cli
from tests.acceptance.test_ops import free_port
from tests.conftest import (
    TOKEN,
    StartFeed,
    StartSimulator,
    _create_database,
    _drop_database,
    plain,
    wait_until,
    with_database,
)
from tests.integration.test_export import action_rows
from tests.integration.test_settlement import implied, truth_breaks, truth_results

README = Path(__file__).resolve().parents[2] / "README.md"
VENV_BIN = Path(sys.executable).parent
PSQL = shutil.which("psql")

# the matches in the shared database: no century in the first, a 105 in the second
SPECS = (
    MatchSpec(seed=1, best_of=7, players=("Mark Selby", "Judd Trump")),
    MatchSpec(seed=7, best_of=7, players=("Ronnie O'Sullivan", "Neil Robertson")),
)


# -- the README, as a user reads it ------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    headings: tuple[str, ...]  # the titles of the sections it is in, outermost first


def readme_blocks() -> list[Block]:
    """Every fenced code block of README.md, with the headings it is under (a ``#`` line inside
    a code block is not a heading)."""
    blocks: list[Block] = []
    stack: list[tuple[int, str]] = []
    fence: tuple[str, list[str]] | None = None
    for line in README.read_text().splitlines():
        if fence is not None:
            if line.startswith("```"):
                blocks.append(Block(fence[0], "\n".join(fence[1]) + "\n",
                                    tuple(t for _, t in stack)))  # fmt: skip
                fence = None
            else:
                fence[1].append(line)
        elif line.startswith("```"):
            fence = (line[3:].strip(), [])
        elif m := re.match(r"(#+) (.*)", line):
            level = len(m[1])
            stack = [(lv, t) for lv, t in stack if lv < level] + [(level, m[2].strip())]
    assert fence is None, "README.md ends inside a code block"
    return blocks


def blocks_in(section: str, lang: str) -> list[str]:
    return [b.text for b in readme_blocks() if b.lang == lang and section in b.headings]


def section_text(title: str) -> str:
    """The prose and code of a section, up to the next heading of its level or above."""
    text = README.read_text()
    m = re.search(rf"^(#+) {re.escape(title)}\n", text, re.M)
    assert m, f"README.md has no section {title!r}"
    rest = text[m.end() :]
    end = re.search(rf"^#{{1,{len(m[1])}}} ", rest, re.M)
    return rest[: end.start()] if end else rest


def the_one(section: str, lang: str) -> str:
    found = blocks_in(section, lang)
    assert len(found) == 1, f"{len(found)} ```{lang} blocks in {section!r}: each needs its test"
    return found[0]


# -- psql variables ----------------------------------------------------------------------------

_VARIABLE = r"[A-Za-z0-9_\x80-\U0010ffff]+"  # psql's variable_char


def quote_literal(value: str) -> str:
    """As libpq's PQescapeLiteral: quotes doubled; with a backslash, `` E'...'`` with them
    doubled too."""
    body = value.replace("'", "''")
    if "\\" in value:
        return " E'" + body.replace("\\", "\\\\") + "'"
    return "'" + body + "'"


def psql_statements(
    script: str, variables: dict[str, str], unknown: list[str] | None = None
) -> list[str]:
    """The statements psql sends for ``script`` (split at ``;``), after its variable
    interpolation: ``:name`` the value as is, ``:'name'`` a quoted literal, ``:"name"`` a quoted
    identifier; never inside quotes, dollar quotes or comments, never ``::``; an unknown
    variable is left as written (and its name added to ``unknown``)."""
    statements: list[str] = []
    out: list[str] = []
    i, n = 0, len(script)
    while i < n:
        c = script[i]
        if script.startswith("--", i):
            end = script.find("\n", i)
            end = n if end < 0 else end
        elif script.startswith("/*", i):
            depth, end = 0, i
            while end < n:
                if script.startswith("/*", end):
                    depth, end = depth + 1, end + 2
                elif script.startswith("*/", end):
                    depth, end = depth - 1, end + 2
                    if depth == 0:
                        break
                else:
                    end += 1
        elif c in "'\"":
            escapes = c == "'" and i > 0 and script[i - 1] in "eE"
            end = i + 1
            while end < n:
                if escapes and script[end] == "\\":
                    end += 2
                elif script[end] == c:
                    end += 1
                    if not script.startswith(c, end):
                        break
                    end += 1
                else:
                    end += 1
        elif (
            c == "$"
            and (m := re.match(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$", script[i:]))
            and not (i > 0 and re.match(r"[A-Za-z0-9_$]", script[i - 1]))
        ):
            close = script.find(m[0], i + len(m[0]))
            end = n if close < 0 else close + len(m[0])
        elif script.startswith("::", i):
            end = i + 2
        elif c == ":" and (m := re.match(rf":(['\"]?)({_VARIABLE})\1", script[i:])):
            end = i + len(m[0])
            if m[2] in variables:
                value = variables[m[2]]
                if m[1] == "'":
                    value = quote_literal(value)
                elif m[1] == '"':
                    value = '"' + value.replace('"', '""') + '"'
                out.append(value)
                i = end
                continue
            if unknown is not None:
                unknown.append(m[2])
        elif c == ";":
            statements.append("".join(out))
            out, i = [], i + 1
            continue
        else:
            end = i + 1
        out.append(script[i:end])
        i = end
    statements.append("".join(out))
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    without = re.sub(r"--[^\n]*|/\*.*?\*/", "", statement, flags=re.S)
    return bool(without.strip())


Rows = list[dict[str, str | None]]  # as psql prints them: text, NULL as None

SEPARATOR, NULL = "\x1f", "\x1e"


def as_text(value: Any) -> str | None:
    """A value as psql prints it (for the columns these queries return)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


def parse_psql(output: str) -> list[Rows]:
    """psql's unaligned output (``-A -F US -P null=RS``, footers on): one list per result."""
    results: list[Rows] = []
    # on newlines only: str.splitlines() also splits at the RS that marks a NULL
    lines = output.removesuffix("\n").split("\n") if output else []
    i = 0
    while i < len(lines):
        header = lines[i].split(SEPARATOR)
        i += 1
        rows: Rows = []
        while not (footer := re.fullmatch(r"\((\d+) rows?\)", lines[i])):
            values = [None if v == NULL else v for v in lines[i].split(SEPARATOR)]
            rows.append(dict(zip(header, values, strict=True)))
            i += 1
        assert int(footer[1]) == len(rows), output
        results.append(rows)
        i += 1
    return results


def run_psql(url: str, script: str, variables: dict[str, str]) -> list[Rows]:
    """``psql URL -v name=value ... -f query.sql``, as the README says (plus the output format,
    no psqlrc and stop at the first error)."""
    assert PSQL is not None
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as f:
        f.write(script)
        f.flush()
        args = [PSQL, plain(url), "-X", "-v", "ON_ERROR_STOP=1", "-A", "-F", SEPARATOR,
                "-P", f"null={NULL}", "-P", "footer=on"]  # fmt: skip
        for name, value in variables.items():
            args += ["-v", f"{name}={value}"]
        done = subprocess.run(
            [*args, "-f", f.name], capture_output=True, text=True, timeout=60, check=False,
            env=cli_env(PGCONNECT_TIMEOUT="10"),
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return parse_psql(done.stdout)


async def run_asyncpg(url: str, script: str, variables: dict[str, str]) -> list[Rows]:
    """The same through asyncpg: psql's substitution, then one statement at a time."""
    conn = await asyncpg.connect(plain(url))
    try:
        results = []
        for statement in psql_statements(script, variables):
            rows = await conn.fetch(statement)
            results.append([{k: as_text(v) for k, v in r.items()} for r in rows])
        return results
    finally:
        await conn.close()


async def run_sql(runner: str, url: str, script: str, variables: dict[str, str]) -> list[Rows]:
    if runner == "psql":
        return await asyncio.to_thread(run_psql, url, script, variables)
    return await run_asyncpg(url, script, variables)


# -- one database holding real ingested, settled matches -------------------------------------


@dataclass
class Ingested:
    url: str
    matches: list[GeneratedMatch]
    last_event_ids: list[int]  # after settling each match in turn (settled one after the other)


def sync_cli(*args: str, env: dict[str, str], timeout: float = 60) -> Done:
    done = subprocess.run(
        [sys.executable, "-m", "ingest", *args],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    return Done(done.returncode, done.stdout, done.stderr)


def wait_for_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"the server exited {proc.returncode}: {log.read_text()}"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        assert time.monotonic() < deadline, f"nothing answers at {url}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def ingested(
    server_url: str, template_name: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Ingested]:
    """Two generated matches, streamed by the real ``ingest run --until-finished --speed fast``
    from the real ``ingest feed serve``, then settled by ``ingest settle --until-finished``."""
    name = asyncio.run(_create_database(server_url, template_name))
    url = with_database(server_url, name)
    try:
        matches = [generate_match(spec) for spec in SPECS]
        folder = tmp_path_factory.mktemp("readme-recordings")
        recordings = []
        for m in matches:
            path = folder / f"{m.fixture_id}.jsonl"
            path.write_text(to_jsonl(m.packets))
            recordings += ["--recording", str(path)]
        port, log = free_port(), folder / "feed-serve.log"
        with log.open("wb") as err:  # a file: nobody reads a pipe while the match is ingested
            server = subprocess.Popen(
                [sys.executable, "-m", "ingest", "feed", "serve", "--port", str(port), *recordings],
                env=cli_env(INGEST_TOKEN=TOKEN), stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        try:
            wait_for_http(f"http://127.0.0.1:{port}/_control/stats", server, log)
            env = cli_env(INGEST_DATABASE_URL=url, INGEST_TOKEN=TOKEN,
                          INGEST_FEED_URL=f"ws://127.0.0.1:{port}")  # fmt: skip
            ids = [str(m.fixture_id) for m in matches]
            run = sync_cli("run", *ids, "--until-finished", "--speed", "fast", env=env)
            assert run.code == 0, run.stderr
        finally:
            server.terminate()
            server.wait(10)
        last_ids = []
        for fixture in ids:  # one after the other: each one's events have the larger ids
            settled = sync_cli("settle", fixture, "--until-finished", env=env)
            assert settled.code == 0, settled.stderr
            last_ids.append(asyncio.run(_fetchval(url, "SELECT max(id) FROM settlement_events")))
        yield Ingested(url, matches, last_ids)
    finally:
        asyncio.run(_drop_database(server_url, name))


async def _fetchval(url: str, query: str, *args: Any) -> Any:
    conn = await asyncpg.connect(plain(url))
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


# -- the SQL blocks and their checks -----------------------------------------------------------

SQL_SECTIONS = ("Querying", "Settlement events", "Live betting status")


def sql_blocks() -> list[str]:
    return [b for section in SQL_SECTIONS for b in blocks_in(section, "sql")]


def statement_key(statement: str) -> str:
    """The key phrase of a statement: its first comment line, up to a colon."""
    first = statement.strip().splitlines()[0]
    assert first.startswith("-- "), f"a README query without a comment to name it:\n{statement}"
    return first.removeprefix("-- ").split(":")[0].strip()


def readme_variables() -> dict[str, str]:
    """The psql variables the README names (``-v name=value``) where the SQL is, as written."""
    text = "".join(section_text(s) for s in SQL_SECTIONS)
    return dict(re.findall(r"-v\s+(\w+)=([^\s`)]+)", text))


@dataclass
class Context:
    match: GeneratedMatch  # the fixture_id given
    settled_since: list[GeneratedMatch]  # the matches settled after the event id given
    variables: dict[str, str]


Check = Callable[[Context, Rows], None]
CHECKS: dict[str, Check] = {}


def check(key: str) -> Callable[[Check], Check]:
    def register(f: Check) -> Check:
        CHECKS[key] = f
        return f

    return register


@check("match winner")
def _match_winner(c: Context, rows: Rows) -> None:
    t = c.match.truth
    assert rows == [
        {
            "winner": t["winner"],
            "status": "completed",
            "home_frames": str(t["home_frames"]),
            "away_frames": str(t["away_frames"]),
        }
    ]


@check("correct score")
def _correct_score(c: Context, rows: Rows) -> None:
    t = c.match.truth
    assert rows == [
        {
            "score": f"{t['home_frames']}-{t['away_frames']}",
            "home_player": t["home"]["name"],
            "away_player": t["away"]["name"],
        }
    ]


@check("frame winner")
def _frame_winner(c: Context, rows: Rows) -> None:
    number = int(c.variables["frame_number"])
    frame = next(f for f in c.match.truth["frames"] if f["frame_number"] == number)
    assert rows == [
        {
            "winner": frame["winner"],
            "home_points": str(frame["home_points"]),
            "away_points": str(frame["away_points"]),
            "conceded": as_text(frame["conceded"]),
        }
    ]


@check("highest break")
def _highest_break(c: Context, rows: Rows) -> None:
    t = c.match.truth
    best = max(t["breaks"], key=lambda b: b["break_score"])  # the first of the highest
    assert rows == [
        {
            "break_score": str(best["break_score"]),
            "player_name": t[best["side"]]["name"],
            "frame_number": str(best["frame_number"]),
        }
    ]


@check("any century in the match")
def _any_century(c: Context, rows: Rows) -> None:
    century = any(b["break_score"] >= 100 for b in c.match.truth["breaks"])
    assert rows == [{"any_century": as_text(century)}]


@check("total fouls")
def _total_fouls(c: Context, rows: Rows) -> None:
    assert rows == [{"total_fouls": str(sum(c.match.truth["fouls"].values()))}]


@check("what is settled now")
def _settled_now(c: Context, rows: Rows) -> None:
    truth = truth_results(c.match.truth, truth_breaks(c.match.truth))
    assert all(r.pop("settled_at") is not None for r in rows)
    assert rows == [
        {"market": m, "status": "settled", "outcome": truth[m], "certainty": "confirmed"}
        for m in sorted(truth)
    ]


@check("a consumer's catch-up")
def _catch_up(c: Context, rows: Rows) -> None:
    """The whole event log of every match settled after the id given, in order: the events the
    packets imply (tests/integration/test_settlement.py)."""
    ids = [int(r.pop("id") or 0) for r in rows]
    assert ids == sorted(set(ids)) and ids[0] > int(c.variables["last_id"])
    expected = []
    for m in c.settled_since:
        for market, kind, outcome, certainty, _ in implied(
            m.packets, m.truth, truth_breaks(m.truth)
        ):
            expected.append(
                {"fixture_id": str(m.fixture_id), "market": market, "kind": kind,
                 "outcome": outcome, "certainty": certainty}
            )  # fmt: skip
    assert rows == expected


@check("may bets be taken on this fixture now")
def _take_bets(c: Context, rows: Rows) -> None:
    """A match backfilled to its end is closed (its finished packet says so)."""
    assert rows[0].pop("since") is not None
    assert rows == [{"take_bets": "f", "status": "closed", "reason": None}]


@check("every fixture not open, and why")
def _not_open(c: Context, rows: Rows) -> None:
    for row in rows:
        assert row.pop("since") is not None
        row.pop("alive_at")  # the backfill's worker confirmed it while connected, or not
    assert {"fixture_id": str(c.match.fixture_id), "status": "closed", "reason": None} in rows
    assert all(r["status"] == "closed" for r in rows)  # every match of this database is over


@check("a trading system's catch-up")
def _betting_catch_up(c: Context, rows: Rows) -> None:
    """Each change once, in order: a backfill may open its fixture before the finished packet
    closes it (the trigger, with the packet), never twice alike in a row."""
    ids = [int(r.pop("id") or 0) for r in rows]
    assert ids == sorted(set(ids)) and ids[0] > int(c.variables["last_betting_id"])
    mine = [r for r in rows if r["fixture_id"] == str(c.match.fixture_id)]
    assert mine[-1] == {
        "fixture_id": str(c.match.fixture_id), "status": "closed", "reason": None,
        "seq": str(len(c.match.packets)),
    }  # fmt: skip
    assert {r["status"] for r in mine} <= {"open", "closed"}
    changes = [(r["status"], r["reason"]) for r in mine]
    assert all(a != b for a, b in itertools.pairwise(changes)), changes


def test_every_readme_query_has_its_check_and_its_variables() -> None:
    keys = [statement_key(s) for b in sql_blocks() for s in psql_statements(b, {})]
    assert len(keys) == len(set(keys)), keys
    assert set(keys) == set(CHECKS), "a README query without a check here, or the reverse"
    named = readme_variables()
    assert {"fixture_id", "frame_number"} <= set(named)
    for block in sql_blocks():
        unknown: list[str] = []
        psql_statements(block, named, unknown)
        assert not unknown, f"variables the README does not name (-v name=...): {unknown}"


def test_psql_variables_are_substituted_as_psql_does() -> None:
    variables = {"v": "O'Sullivan", "w": "back\\slash 'n' quote", "n": "41", "col": 'a "b"'}
    script = """-- :n in a comment, :'v' too
SELECT :'v' AS literal, :'w' AS escaped, :n::int + 1 AS raw, ':n' AS quoted,
       $$:n$$ AS dollar, $x$ :'v' $x$ AS tagged, /* :n /* nested */ :n */ 'a::b' AS cast_text,
       E'\\\\:n' AS e_string, 1 AS :"col";
SELECT :n AS "second; statement:n"
"""
    assert psql_statements(script, variables) == [
        """-- :n in a comment, :'v' too
SELECT 'O''Sullivan' AS literal,  E'back\\\\slash ''n'' quote' AS escaped, 41::int + 1 AS raw, """
        """':n' AS quoted,
       $$:n$$ AS dollar, $x$ :'v' $x$ AS tagged, /* :n /* nested */ :n */ 'a::b' AS cast_text,
       E'\\\\:n' AS e_string, 1 AS "a ""b\"\"\"""",
        'SELECT 41 AS "second; statement:n"',
    ]


@pytest.mark.skipif(PSQL is None, reason="psql is not installed (Debian: postgresql-client)")
async def test_psql_and_the_substitution_give_the_same_rows(database_url: str) -> None:
    variables = {"v": "O'Sullivan", "w": "back\\slash 'n' quote", "n": "41", "col": 'a "b"'}
    script = """-- :n in a comment
SELECT :'v' AS literal, :'w' AS escaped, :n::int + 1 AS raw, ':n' AS quoted, $$:n$$ AS dollar,
       /* :n */ 'a::b' AS cast_text, E'\\\\:n' AS e_string, 1 AS :"col";
SELECT :n AS "second; statement:n" WHERE false;
"""
    by_psql = await run_sql("psql", database_url, script, variables)
    assert by_psql == await run_sql("asyncpg", database_url, script, variables)
    assert by_psql[0] == [{"literal": "O'Sullivan", "escaped": "back\\slash 'n' quote",
                           "raw": "42", "quoted": ":n", "dollar": ":n", "cast_text": "a::b",
                           "e_string": "\\:n", 'a "b"': "1"}]  # fmt: skip
    assert by_psql[1] == []


RUNNERS = [
    pytest.param("psql", marks=pytest.mark.skipif(
        PSQL is None,
        reason="psql is not installed (Debian: postgresql-client): the asyncpg run checks the same "
        "SQL after the same substitution",
    )),
    "asyncpg",
]  # fmt: skip


@pytest.mark.parametrize("runner", RUNNERS)
async def test_every_readme_query_gives_the_truth(ingested: Ingested, runner: str) -> None:
    named = readme_variables()
    assert any(b["break_score"] >= 100 for b in ingested.matches[1].truth["breaks"])
    assert all(b["break_score"] < 100 for b in ingested.matches[0].truth["breaks"])
    for i, match in enumerate(ingested.matches):
        last_id = ingested.last_event_ids[i - 1] if i else 0
        variables = {**named, "fixture_id": str(match.fixture_id), "last_id": str(last_id)}
        context = Context(match, ingested.matches[i:], variables)
        for block in sql_blocks():
            results = await run_sql(runner, ingested.url, block, variables)
            keys = [statement_key(s) for s in psql_statements(block, {})]
            assert len(results) == len(keys), block
            for key, rows in zip(keys, results, strict=True):
                try:
                    CHECKS[key](context, rows)
                except AssertionError as e:
                    raise AssertionError(f"{key!r}, seed {SPECS[i].seed}: {e}") from e


# -- the LISTEN examples -----------------------------------------------------------------------


def listener_script(section: str, url: str) -> str:
    """The section's ```python block, its placeholder URL replaced by ``url``."""
    code = the_one(section, "python")
    placeholders = re.findall(r'asyncpg\.connect\(("[^"]*")\)', code)
    assert len(placeholders) == 1, placeholders
    return code.replace(placeholders[0], json.dumps(url))


@contextlib.asynccontextmanager
async def listener(
    section: str, url: str, channel: str, folder: Path, listened: str | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The README's example running in the venv's python (unbuffered, to read its lines as
    they come), once its LISTEN is in place (or, ``listened``, a query it makes after it);
    killed at the end."""
    script = folder / "listen.py"
    script.write_text(listener_script(section, plain(url)))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-u", str(script), env=cli_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        conn = await asyncpg.connect(plain(url))
        try:

            async def listening() -> bool:
                if proc.returncode is not None:
                    raise AssertionError(await stderr_of(proc))
                return bool(
                    await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND query ILIKE $1",
                        listened or f"LISTEN %{channel}%",
                    )
                )

            await wait_until(listening, timeout=20)
        finally:
            await conn.close()
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def stderr_of(proc: asyncio.subprocess.Process) -> str:
    assert proc.stderr is not None
    if proc.returncode is None:
        proc.kill()
    return (await proc.stderr.read()).decode()[-3000:]


async def printed(proc: asyncio.subprocess.Process, count: int, timeout: float = 20) -> list[str]:
    """The next ``count`` lines the process prints."""
    assert proc.stdout is not None
    lines = []
    try:
        async with asyncio.timeout(timeout):
            while len(lines) < count:
                line = await proc.stdout.readline()
                if not line:
                    break
                lines.append(line.decode().rstrip("\n"))
    except TimeoutError:
        pass
    if len(lines) < count:
        raise AssertionError(
            f"{len(lines)} of {count} lines: {lines[-3:]}\n{await stderr_of(proc)}"
        )
    return lines


async def test_the_ingest_actions_listener_prints_the_match_after_each_batch(
    database_url: str, start_feed: StartFeed, recording: Recording, match: GeneratedMatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    fixture = str(match.fixture_id)
    feed = await start_feed([recording])
    async with listener(
        "Reacting to new actions without polling", database_url, "ingest_actions", tmp_path
    ) as proc:
        # the test's own listener counts the notifications the example must react to
        batches: list[dict[str, Any]] = []
        conn = await asyncpg.connect(plain(database_url))
        try:
            await conn.add_listener("ingest_actions", lambda *a: batches.append(json.loads(a[3])))
            env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=feed,
                          INGEST_TOKEN=TOKEN)  # fmt: skip
            # small batches: many notifications, close together, as a live feed sends them
            done = await cli("run", fixture, "--until-finished", "--speed", "fast",
                             "--batch-size", "10", env=env)  # fmt: skip
            assert done.code == 0, done.stderr

            async def all_notified() -> bool:  # up to the batch with the finished packet
                return any(b["finished"] for b in batches)

            await wait_until(all_notified)
        finally:
            await conn.close()
        assert len(batches) >= 10 and {b["fixture_id"] for b in batches} == {fixture}
        lines = await printed(proc, len(batches))
        record = rf"<Record fixture_id=UUID\('{fixture}'\) .*>"
        assert all(re.fullmatch(record, line) for line in lines), lines[:3]
        t = match.truth
        assert (
            f"home_frames={t['home_frames']} away_frames={t['away_frames']} "
            f"winner='{t['winner']}' finished=True status='completed'"
        ) in lines[-1]
        proc.kill()
        assert await stderr_of(proc) == ""


async def test_the_settlement_events_listener_prints_each_event(
    database_url: str, start_feed: StartFeed, recording: Recording, match: GeneratedMatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    fixture = str(match.fixture_id)
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=await start_feed([recording]),
                  INGEST_TOKEN=TOKEN)  # fmt: skip
    done = await cli("run", fixture, "--until-finished", "--speed", "fast", env=env)
    assert done.code == 0, done.stderr
    async with listener("Settlement events", database_url, "settlement_events", tmp_path) as proc:
        settled = await cli("settle", fixture, "--until-finished", env=env)
        assert settled.code == 0, settled.stderr
        events = implied(match.packets, match.truth, truth_breaks(match.truth))
        lines = await printed(proc, len(events))
        assert lines == [
            f"{fixture} {market} {kind} {outcome} {certainty}"
            for market, kind, outcome, certainty, _ in events
        ]
        assert f"{fixture} match_winner settle {match.truth['winner']} confirmed" in lines
        proc.kill()
        assert await stderr_of(proc) == ""


async def test_the_betting_status_listener_prints_each_change_and_a_worker_gone(
    database_url: str, start_simulator: StartSimulator, tmp_path: Path
) -> None:
    # a live match from its first frame on, 40 times faster: a packet about every half second
    match = generate_match(MatchSpec(seed=21, best_of=7, suspensions=False))
    recording = Recording.from_text(to_jsonl(match.packets), name="seed-21")
    sim = await start_simulator(
        [recording], live=True, time_scale=40, live_offset=1290, heartbeat_interval=0.25
    )
    fixture = str(match.fixture_id)
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=sim.url, INGEST_TOKEN=TOKEN,
                  INGEST_STALE_AFTER="1", INGEST_LIVENESS_TIMEOUT="3")  # fmt: skip
    async with listener(
        "Live betting status", database_url, "betting_status", tmp_path, "%fixture_betting%"
    ) as proc:  # the example reads the view once it listens
        worker = await start_cli("run", fixture, env=env)
        try:
            assert await printed(proc, 1) == [f"{fixture} open "]
            sim.set_faults(match.fixture_id, stall_now=2.0)  # silent, under the liveness timeout
            assert await printed(proc, 2) == [f"{fixture} suspended feed_stale", f"{fixture} open "]
            worker.send_signal(signal.SIGKILL)  # nothing left to say it: the view does
            assert await printed(proc, 1, timeout=10) == [f"{fixture} suspended worker_silent"]
        finally:
            if worker.returncode is None:
                worker.kill()
            await worker.wait()
        proc.kill()
        assert await stderr_of(proc) == ""


# -- the sh walk-throughs ----------------------------------------------------------------------


@dataclass
class Script(Done):
    pgid: int  # the script's process group: bash and whatever it left running


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


async def group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@contextlib.asynccontextmanager
async def bash(
    script: str, *, cwd: Path, env: dict[str, str], timeout: float = 90
) -> AsyncIterator[Script]:
    """Run ``script`` with ``bash -e`` (each line must succeed) in a process group of its own;
    at the end, whatever happened, every process still in the group is stopped. Its output goes
    to files: background servers keep pipes open after the script ends."""
    (cwd / "readme.sh").write_text(script)
    out, err = cwd / "readme.stdout", cwd / "readme.stderr"
    with out.open("wb") as o, err.open("wb") as e:
        proc = await asyncio.create_subprocess_exec(
            "bash", "-e", "readme.sh", cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=o, stderr=e, start_new_session=True,
        )  # fmt: skip
    try:
        try:
            code = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"over {timeout} s:\n{err.read_text()[-3000:]}") from None
        yield Script(code, out.read_text(), err.read_text(), proc.pid)
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            if await group_gone(proc.pid, 5):
                break
        if proc.returncode is None:
            await proc.wait()


def script_env(**extra: str) -> dict[str, str]:
    """What a user's shell has after ``source .venv/bin/activate``."""
    assert (VENV_BIN / "ingest").exists()
    return cli_env(PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra)


def substitute(script: str, replacements: list[tuple[str, str]]) -> str:
    for old, new in replacements:
        assert old in script, f"the README's block no longer has {old!r}:\n{script}"
        script = script.replace(old, new)
    return script


WALK_THROUGH_URL = "postgresql://postgres@127.0.0.1:5432/snooker"


async def test_the_generator_walk_through_ends_with_the_report(
    empty_database_url: str, tmp_path: Path
) -> None:
    written = the_one("The feed simulator and the match generator", "sh")
    spec = re.search(r"--seed (\d+) --best-of (\d+) --fixture-id (\S+)", written)
    assert spec, written
    match = generate_match(MatchSpec(seed=int(spec[1]), best_of=int(spec[2]),
                                     fixture_id=uuid.UUID(spec[3])))  # fmt: skip
    script = substitute(
        written, [(WALK_THROUGH_URL, plain(empty_database_url)), ("8765", str(free_port()))]
    )
    async with bash(script, cwd=tmp_path, env=script_env()) as done:
        assert done.code == 0, done.stderr
        # its `kill %1` stopped the background server: nothing is left in the group
        assert await group_gone(done.pgid, 10), "the simulator outlived the walk-through"
    assert (tmp_path / "match.jsonl").read_text() == to_jsonl(match.packets)  # same seed, bytes
    t = match.truth
    home, away = t["home"]["name"], t["away"]["name"]
    assert (
        f"generated fixture {match.fixture_id}: {t['packets']} packets, "
        f"{t['winner']} {t['home_frames']}-{t['away_frames']}"
    ) in done.stderr
    report = done.stdout.splitlines()
    assert re.fullmatch(
        rf"{home}\s+{t['home_frames']} - {t['away_frames']}\s+{away}\s+best of {t['best_of']}, "
        "completed",
        report[0],
    ), report[:2]
    assert report[1] == f"Winner: {t[t['winner']]['name']}"
    assert f"Fixture {match.fixture_id}" in report
    for f in t["frames"]:
        row = rf"│\s+{f['frame_number']} │\s+{f['home_points']} │\s+{f['away_points']} │ .*"
        assert any(re.fullmatch(row, line) for line in report), f
    assert report[-1].startswith("└"), "the report is not the end of the output"


async def test_the_replay_walk_through_exports_and_serves_the_stored_matches(
    ingested: Ingested, other_database_url: str, tmp_path: Path
) -> None:
    first, second = (str(m.fixture_id) for m in ingested.matches)
    ports = free_port(), free_port()
    script = substitute(
        the_one("Replaying stored matches", "sh"),
        [("FIXTURE_ID ...", f"{first} {second}"), ("ID1 ID2", f"{first} {second}"),
         ("FIXTURE_ID", first), ("8765", str(ports[0])), ("8766", str(ports[1]))],
    )  # fmt: skip
    token = re.findall(r"INGEST_TOKEN=(\S+) ingest feed serve", script)
    assert len(token) == 2 and len(set(token)) == 1, script
    stored = {f: await _stored(ingested.url, f) for f in (first, second)}
    env = script_env(INGEST_DATABASE_URL=ingested.url)
    async with bash(script, cwd=tmp_path, env=env) as done:
        assert done.code == 0, done.stderr
        for f in (first, second):  # a file per fixture, one packet per line in seq order
            assert (tmp_path / "recordings" / f"{f}.jsonl").read_text().splitlines() == stored[f]
        assert (tmp_path / "match.jsonl").read_text().splitlines() == stored[first]
        # both servers serve both matches ("every finished match"; "these ones")
        for port in ports:
            assert await served(port) == {first, second}
        # and what they serve is the stored match, row for row
        copies = [
            cli("run", fixture, "--until-finished", "--speed", "fast",
                env=cli_env(INGEST_DATABASE_URL=other_database_url, INGEST_TOKEN=token[0],
                            INGEST_FEED_URL=f"ws://127.0.0.1:{port}"))
            for fixture, port in ((first, ports[0]), (second, ports[1]))
        ]  # fmt: skip
        for run in await asyncio.gather(*copies):
            assert run.code == 0, run.stderr
    assert await action_rows(other_database_url) == await action_rows(ingested.url)


async def served(port: int, timeout: float = 30) -> set[str]:
    """The fixtures a simulator serves, once it answers."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(timeout):
        while True:
            try:
                async with http.get(f"http://127.0.0.1:{port}/_control/stats") as r:
                    if r.status == 200:
                        return set(await r.json())
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)


async def _stored(url: str, fixture: str) -> list[str]:
    conn = await asyncpg.connect(plain(url))
    try:
        rows = await conn.fetch(
            "SELECT payload::text FROM actions WHERE fixture_id = $1 ORDER BY seq",
            uuid.UUID(fixture),
        )
        return [r[0] for r in rows]
    finally:
        await conn.close()
