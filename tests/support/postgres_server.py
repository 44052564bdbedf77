"""A private PostgreSQL for the test suite (pytest plugin).

Never the machine's cluster: `PrivatePostgres` runs `initdb` into a fresh
directory under /tmp and starts its own postmaster on a free port of
127.0.0.1, with its unix socket in that directory, trust authentication and
durability switched off (`fsync`, `synchronous_commit`, `full_page_writes`)
because nothing in it has to survive a crash — only a clean `restart()`.

`initdb` refuses to run as root; when the tests run as root the server
commands run as the `postgres` OS user (`runuser -u postgres --`) and the
directory is handed to that user.

Fixture:
- `private_postgres` (session): a started `PrivatePostgres`; skipped, with the
  reason in the `-ra` summary, when no PostgreSQL server binaries are installed.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.support.tokens import free_port

__all__ = [
    "PrivatePostgres",
    "postgres_binaries",
    "postgres_unavailable_reason",
    "private_postgres",
]

_TOOLS = ("initdb", "pg_ctl", "postgres")
_LIB_DIR = Path("/usr/lib/postgresql")
_OS_USER = "postgres"  # who runs the server when the tests run as root
_SUPERUSER = "postgres"  # the database role initdb creates (`-U`)
_STARTUP_TIMEOUT = 30.0


def postgres_binaries() -> Path | None:
    """The directory holding `initdb`, `pg_ctl` and `postgres`, or None.

    PATH first (the directory of the resolved `initdb`, so all three come from
    one installation), then the highest version under /usr/lib/postgresql/*/bin.
    """
    initdb = shutil.which("initdb")
    if initdb is not None:
        for candidate in (Path(initdb).resolve().parent, Path(initdb).parent):
            if all(os.access(candidate / tool, os.X_OK) for tool in _TOOLS):
                return candidate
    versions = []
    if _LIB_DIR.is_dir():
        for entry in _LIB_DIR.iterdir():
            bindir = entry / "bin"
            if all(os.access(bindir / tool, os.X_OK) for tool in _TOOLS):
                key = tuple(int(part) for part in re.findall(r"\d+", entry.name))
                versions.append((key, bindir))
    return max(versions)[1] if versions else None


def postgres_unavailable_reason() -> str | None:
    """Why no private PostgreSQL can be started here, as a sentence; None when one can."""
    if postgres_binaries() is None:
        return (
            "no PostgreSQL server binaries (initdb, pg_ctl) on PATH or under "
            f"{_LIB_DIR}: apt-get install -y postgresql"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(_OS_USER)
        except KeyError:
            return (
                f"running as root and there is no '{_OS_USER}' OS user to run the private "
                "PostgreSQL as (initdb refuses root): useradd --system postgres"
            )
        if shutil.which("runuser") is None:
            return "running as root and no runuser to start PostgreSQL as 'postgres' (util-linux)"
    return None


class PrivatePostgres:
    """One PostgreSQL cluster the tests own: a fixed port and data dir, stoppable, restartable."""

    def __init__(
        self,
        bindir: Path | None = None,
        *,
        port: int | None = None,
        base_dir: str | Path | None = None,
        startup_timeout: float = _STARTUP_TIMEOUT,
    ) -> None:
        reason = postgres_unavailable_reason() if bindir is None else None
        found = bindir or postgres_binaries()
        if reason is not None or found is None:
            raise RuntimeError(reason or "no PostgreSQL server binaries")
        self.bindir = Path(found)
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self._as_root = os.geteuid() == 0
        # /tmp rather than $TMPDIR: a TMPDIR under /root is not traversable by `postgres`
        parent = base_dir or ("/tmp" if Path("/tmp").is_dir() else None)
        self.dir = Path(tempfile.mkdtemp(prefix="onbehalf-pg-", dir=parent))
        self.datadir = self.dir / "data"
        self.logfile = self.dir / "postgres.log"
        if self._as_root:
            user = pwd.getpwnam(_OS_USER)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        self._initialised = False
        self._removed = False
        atexit.register(self._atexit)

    # -- public API -------------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    @property
    def running(self) -> bool:
        """Whether the postmaster recorded in the data dir is alive."""
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, owned by someone else
            return True
        return True

    def start(self) -> PrivatePostgres:
        """Start (running `initdb` the first time); returns once it accepts connections."""
        if self._removed:
            raise RuntimeError(f"{self.dir} was removed; make a new PrivatePostgres")
        if not self._initialised:
            self._initdb()
        if not self.running:
            result = self._run(
                "pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile),
                "-w", "-t", str(int(self.startup_timeout)), "-s", "start",
            )
            if result.returncode != 0:
                raise RuntimeError(self._failure("pg_ctl start failed", result))
        self._wait_ready()
        return self

    def stop(self) -> None:
        """Fast shutdown (`pg_ctl -m fast`): clients are disconnected, data is kept."""
        if not self._initialised or not self.running:
            return
        result = self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "-s", "stop")
        if result.returncode != 0 and self.running:
            raise RuntimeError(self._failure("pg_ctl stop failed", result))

    def restart(self) -> PrivatePostgres:
        """Stop and start on the same port and data dir: committed data survives."""
        self.stop()
        return self.start()

    def create_database(self, name: str) -> str:
        """A fresh, empty database `name` (dropped first if it exists); returns its URL."""
        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=5) as conn:
            drop = "DROP DATABASE IF EXISTS {}"
            if conn.info.server_version >= 130000:
                drop += " WITH (FORCE)"  # other tests' leftover connections don't block it
            conn.execute(sql.SQL(drop).format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        try:
            self.stop()
        finally:
            if not self.running:
                shutil.rmtree(self.dir, ignore_errors=True)
                self._removed = True
                atexit.unregister(self._atexit)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"

    def __enter__(self) -> PrivatePostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PrivatePostgres(port={self.port}, dir={str(self.dir)!r}, running={self.running})"

    # -- internals --------------------------------------------------------------------------

    def _initdb(self) -> None:
        result = self._run(
            "initdb", "-D", str(self.datadir), "-U", _SUPERUSER, "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )
        if result.returncode != 0:
            raise RuntimeError(self._failure("initdb failed", result))
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",  # pg_ctl -l writes stderr to the log file
            "log_destination": "'stderr'",
        }
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/support/postgres_server.py\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self._initialised = True

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / tool), *args]
        if self._as_root:
            command = ["runuser", "-u", _OS_USER, "--", *command]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        return subprocess.run(
            command, cwd=self.dir, env=env, capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=self.startup_timeout + 30,
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                error = exc
                if not self.running:
                    break
                time.sleep(0.05)
        raise RuntimeError(
            f"private PostgreSQL on 127.0.0.1:{self.port} did not accept connections within "
            f"{self.startup_timeout:.0f} s ({error}); server log {self.logfile}:\n"
            f"{self.log_tail()}"
        )

    def _failure(self, what: str, result: subprocess.CompletedProcess[str]) -> str:
        output = (result.stdout + result.stderr).strip()
        return (
            f"{what} (exit {result.returncode}): {output}\n"
            f"server log {self.logfile}:\n{self.log_tail()}"
        )

    def _atexit(self) -> None:  # a crashed session must not leave a postmaster behind
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            self.close()


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """The suite's private PostgreSQL (never the machine's cluster on 5432)."""
    reason = postgres_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.close()
