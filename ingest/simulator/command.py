"""``ingest feed serve`` and ``ingest feed generate``: the simulator's command line.

Loaded by :mod:`ingest.cli` only for ``ingest feed``. Every flag here is for one run of the
simulator, so none reads the environment (the token and the database URL, which are settings,
do). Defaults are the dataclasses' own (:class:`SimulatorOptions`, :class:`Faults`,
:class:`MatchSpec`), written there once.
"""

from __future__ import annotations

import uuid
from typing import Any

import click

from ingest.cli import (
    FIXTURE_ID,
    build,
    command,
    database_url,
    declared_options,
    modules_loaded,
    run_async,
    start_command,
)
from ingest.settings import POSITIVE, Logging, Runtime, Settings
from ingest.simulator.generator import MatchSpec
from ingest.simulator.server import Faults, SimulatorOptions

_SIM = SimulatorOptions()
_FAULTS = Faults()
_SPEC = MatchSpec(seed=1)
_group = click.Group("feed")  # only a holder: ingest.cli's lazy group serves these commands


@command(_group, "serve", "serve fixtures like the provider does")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="port to listen on (0: any free one)")  # fmt: skip
@click.option(
    "--recording", "recordings", multiple=True, metavar="[FIXTURE_ID=]PATH",
    show_default="the bundled demo match", help="a JSON-lines recording (repeatable)",
)  # fmt: skip
@click.option(
    "--from-database/--no-from-database", "from_database", default=False,
    help="also serve matches stored in the database (--database-url): the FIXTURE_IDs given, "
    "or every finished one",
)  # fmt: skip
@click.argument("fixture_ids", nargs=-1, type=FIXTURE_ID, metavar="[FIXTURE_ID]...")
@click.option("--generate", type=click.IntRange(min=0), default=0, metavar="N",
              help="also serve N generated matches, seeds --seed .. --seed+N-1")  # fmt: skip
@click.option("--seed", type=int, default=_SPEC.seed, show_default=True,
              help="first seed for --generate")  # fmt: skip
@click.option("--best-of", type=click.IntRange(min=1), default=_SPEC.best_of,
              show_default=True, help="frames per generated match")  # fmt: skip
@click.option(
    "--live/--no-live",
    default=_SIM.live,
    help="the fixtures are being played from the moment the simulator starts",
)
@click.option(
    "--live-offset",
    type=click.FloatRange(min=0),
    default=_SIM.live_offset,
    show_default=True,
    metavar="SECONDS",
    help="with --live: match time already played when the simulator starts",
)
@click.option(
    "--max-gap",
    type=POSITIVE,
    default=_SIM.max_gap,
    metavar="SECONDS",
    help="never wait longer than this between two packets",
)
@click.option(
    "--heartbeat-interval",
    type=POSITIVE,
    default=_SIM.heartbeat_interval,
    show_default=True,
    help="seconds between heartbeats",
)
@click.option(
    "--time-scale",
    type=POSITIVE,
    default=_SIM.time_scale,
    show_default=True,
    help="speed=normal replays the recorded pacing divided by this",
)
@click.option(
    "--one-based/--no-one-based",
    default=_SIM.one_based,
    help="read startPosition 1-based (seqNum of the last packet + 1)",
)
@click.option(
    "--drop-after",
    type=click.IntRange(min=1),
    default=_FAULTS.drop_after,
    metavar="N",
    help="fault: drop every connection after N packets",
)
@click.option(
    "--drop-mode",
    type=click.Choice(["close", "reset"]),
    default=_FAULTS.drop_mode,
    show_default=True,
    help="fault: a close frame (1011) or an abrupt TCP reset",
)
@click.option(
    "--stall-after",
    type=click.IntRange(min=0),
    default=_FAULTS.stall_after,
    metavar="N",
    help="fault: after N packets on a connection, send nothing ...",
)
@click.option(
    "--stall-seconds",
    type=click.FloatRange(min=0),
    default=_FAULTS.stall_seconds,
    show_default=True,
    help="... for this long (websocket pings are still answered)",
)
@click.option(
    "--malformed-every",
    type=click.IntRange(min=1),
    default=_FAULTS.malformed_every,
    metavar="N",
    help="fault: a malformed frame after every N packets",
)
@click.option(
    "--hostile-every",
    type=click.IntRange(min=1),
    default=_FAULTS.hostile_every,
    metavar="N",
    help="fault: a hostile frame (deep nesting, invalid actions, huge "
    "strings) after every N packets",
)
@click.option(
    "--refuse-seconds",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="fault: answer HTTP 503 to new connections for this long",
)
@click.option("--refuse-token/--no-refuse-token", default=_FAULTS.refuse_token,
              help="fault: refuse every token, as after its expiry")  # fmt: skip
@click.option(
    "--delay-seconds",
    type=click.FloatRange(min=0),
    default=_FAULTS.delay_seconds,
    show_default=True,
    help="fault, with --live: stamp each packet this long before it is sent (a delayed feed)",
)
@click.option(
    "--suspend-after",
    type=click.IntRange(min=1),
    default=_FAULTS.suspend_after,
    metavar="N",
    help="fault, with --live: after each fixture's Nth packet the provider suspends collection "
    "(a Status Updated packet, CollectionSuspended) ...",
)
@click.option(
    "--suspend-seconds",
    type=click.FloatRange(min=0),
    default=_FAULTS.suspend_seconds,
    show_default=True,
    help="... for this long, then collects again (CollectingLive); later packets are renumbered",
)
@declared_options(Settings, "token_file")
@declared_options(Settings, "database_url", "data_dir")
@declared_options(Logging)
@declared_options(Runtime)
def serve(
    host: str, port: int, recordings: tuple[str, ...], from_database: bool,
    fixture_ids: tuple[uuid.UUID, ...], generate: int, seed: int, best_of: int, **values: Any,
) -> int:  # fmt: skip
    """The simulator, with its recordings and its faults (also settable while it runs:
    POST /_control/faults)."""
    from ingest import commands
    from ingest.simulator.recording import Recording

    settings = start_command(values)
    faults = {
        name: values.pop(name)
        for name in ("drop_after", "drop_mode", "stall_after", "stall_seconds",
                     "malformed_every", "hostile_every", "refuse_seconds", "refuse_token",
                     "delay_seconds", "suspend_after", "suspend_seconds")
    }  # fmt: skip
    options = SimulatorOptions(
        token=settings.token.reveal() if settings.token else None,
        heartbeat_interval=values.pop("heartbeat_interval"),
        one_based=values.pop("one_based"),
        time_scale=values.pop("time_scale"),
        max_gap=values.pop("max_gap"),
        live=values.pop("live"),
        live_offset=values.pop("live_offset"),
    )
    options.faults.update(faults)
    if options.faults.suspend_after is not None and not options.live:
        raise click.UsageError("--suspend-after needs --live (the stream it is injected into)")
    if fixture_ids and not from_database:
        raise click.UsageError("FIXTURE_IDs name stored matches: give --from-database too")
    modules_loaded()  # before the recordings: generating matches makes garbage
    loaded = [Recording.load(spec) for spec in recordings]
    loaded += [Recording.generated(seed + i, best_of=best_of) for i in range(generate)]
    stored = (database_url(settings), list(fixture_ids)) if from_database else None
    if stored is None and not loaded:
        loaded = [Recording.demo()]
    return run_async(
        lambda stop: commands.serve_feed(loaded, options, host, port, stop, from_database=stored)
    )


@command(_group, "generate", "write a generated match as JSON lines")
@click.option("--seed", type=int, default=_SPEC.seed, show_default=True,
              help="same seed, same bytes")  # fmt: skip
@click.option("--best-of", type=click.IntRange(min=1), default=_SPEC.best_of, show_default=True,
              help="frames (odd)")  # fmt: skip
@click.option("--reds", type=click.Choice(["6", "15"]), default=str(_SPEC.reds),
              show_default=True, help="reds on the table")  # fmt: skip
@click.option(
    "--players",
    nargs=2,
    metavar="HOME AWAY",
    default=None,
    show_default=" and ".join(_SPEC.players),
    help="the players' names",
)
@click.option(
    "--fixture-id",
    type=FIXTURE_ID,
    show_default="derived from the seed",
    help="the fixture id in every packet",
)
@click.option("--truth", metavar="FILE", help="also write the true result as JSON")
@click.option(
    "--output", "-o", metavar="FILE", show_default="standard output", help="where the lines go"
)
@click.option(
    "--corrections/--no-corrections",
    default=_SPEC.corrections,
    help="Pending / Cancelled / Deleted / Updated / Restored packets",
)
@click.option("--suspensions/--no-suspensions", default=_SPEC.suspensions,
              help="collection suspensions")  # fmt: skip
@declared_options(Logging)
@declared_options(Runtime)
def generate(**values: Any) -> int:
    """A whole match that follows the rules of snooker (same seed, same bytes); the fixture id
    is printed on standard error."""
    from ingest import commands

    modules_loaded()  # generate runs no event loop (see run_async)
    logs = build(Logging, values)
    build(Runtime, values)
    from ingest.cli import configure_logging

    configure_logging(logs.log_level.upper(), logs.log_format)
    players = values.pop("players")
    return commands.generate_feed(
        seed=values["seed"], best_of=values["best_of"], reds=int(values["reds"]),
        players=tuple(players) if players else None, fixture_id=values["fixture_id"],
        corrections=values["corrections"], suspensions=values["suspensions"],
        output=values["output"], truth=values["truth"],
    )  # fmt: skip


COMMANDS: dict[str, click.Command] = dict(_group.commands)
