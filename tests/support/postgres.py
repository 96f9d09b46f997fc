"""A throwaway PostgreSQL server on loopback, built from Debian's ``postgresql`` binaries.

Used by the test suite and local benchmarks so the metadata DB is exercised against the real production
backend, not just SQLite. Durability is switched off (fsync etc.): the data dir is deleted on exit anyway.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .process import ManagedServer, free_ports

POSTGRES_ROOT = Path("/usr/lib/postgresql")
SYSTEM_USER = "postgres"  # Debian's package creates it; postgres refuses to run as root
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresUnavailable(RuntimeError):
    """The server binaries are missing or the server would not start."""


def find_bin_dir(root: Path = POSTGRES_ROOT) -> Path:
    """The ``bin`` dir of the highest installed major version (``/usr/lib/postgresql/<N>/bin``)."""
    versions = [p.parent.parent for p in root.glob("*/bin/initdb") if p.parent.parent.name.isdigit()]
    if not versions:
        raise PostgresUnavailable(
            f"no PostgreSQL server binaries under {root}/*/bin; run scripts/system-deps.sh "
            "(it apt-installs postgresql)"
        )
    return max(versions, key=lambda p: int(p.name)) / "bin"


class PostgresServer(ManagedServer):
    """``with PostgresServer() as pg: engine = make_engine(pg.create_database("t1"))``.

    Runs as the current user, or as the ``postgres`` system user (via ``runuser``) when the current user is
    root. Trust authentication on 127.0.0.1 only; the unix socket lives inside the temp dir.
    """

    def __init__(self, bin_dir: Path | None = None, start_attempts: int = 3) -> None:
        self.bin_dir = bin_dir or find_bin_dir()
        self.start_attempts = start_attempts
        self.port: int | None = None
        self._tmp: Path | None = None
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        if self.port is None:
            raise RuntimeError("PostgresServer is not running")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    @property
    def data_dir(self) -> Path:
        assert self._tmp is not None
        return self._tmp / "data"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        import psycopg
        from psycopg import sql

        if not _DB_NAME.match(name):
            raise ValueError(f"database name must match {_DB_NAME.pattern}: {name!r}")
        conninfo = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.database_url(name)

    # ---------------------------------------------------------------------------------------- lifecycle

    def start(self) -> PostgresServer:
        self._tmp = Path(tempfile.mkdtemp(prefix="postergenre-pg-"))
        try:
            if self._as_postgres:
                user = pwd.getpwnam(SYSTEM_USER)
                os.chown(self._tmp, user.pw_uid, user.pw_gid)
            self._run(
                "initdb", "-D", str(self.data_dir), "-U", "postgres", "-A", "trust",
                "-E", "UTF8", "--locale=C", "--no-sync",
            )  # fmt: skip
            self._start_on_free_port()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_on_free_port(self) -> None:
        """Another process can grab the probed port before postgres binds it, hence a few attempts."""
        log = self._tmp / "server.log"
        for attempt in range(1, self.start_attempts + 1):
            (self.port,) = free_ports(1)
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self._tmp} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            done = self._run(
                "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data_dir), "-l", str(log), "-o", options,
                check=False,
            )  # fmt: skip
            if done.returncode == 0:
                return
            if attempt == self.start_attempts:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else done.stdout
                self.port = None
                raise PostgresUnavailable(f"PostgreSQL did not start: {tail.strip()}")

    def stop(self) -> None:
        """Immediate shutdown (no checkpoint: the data is thrown away) and removal of the temp dir."""
        if self._tmp is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.data_dir), check=False)
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None
        self.port = None

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", SYSTEM_USER, "--", *cmd]
        done = subprocess.run(
            cmd, cwd=self._tmp, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
        )
        if check and done.returncode != 0:
            raise PostgresUnavailable(
                f"{tool} failed ({done.returncode}): {(done.stderr or done.stdout).strip()}"
            )
        return done
