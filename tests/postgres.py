"""A throwaway PostgreSQL server for tests: Debian's ``postgresql`` binaries (installed by
scripts/bootstrap), a new cluster in a temporary directory, run as the unprivileged ``postgres``
user when the tests run as root, listening on a free loopback port.

If it cannot start, the tests that need it fail with the reason: nothing is skipped.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from ooma_moh.lab import free_port


def pg_bin() -> Path:
    """The directory of Debian's PostgreSQL server binaries (the newest installed)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    assert found, "PostgreSQL server binaries are missing: run scripts/bootstrap (Debian package postgresql)"
    return Path(found[-1]).parent


class PostgresServer:
    """A running throwaway cluster; :meth:`database` makes a fresh database for one test."""

    def __init__(self) -> None:
        self.bin = pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="ooma-moh-pg-"))
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.log = self.dir / "server.log"
        self._count = 0

    def _run(self, *argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", self.user, "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *argv], check=True, capture_output=True, text=True, **kw)

    def start(self) -> PostgresServer:
        if os.geteuid() == 0:
            shutil.chown(self.dir, self.user)
        data = self.dir / "data"
        self._run(
            str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"
        )
        self.start_server()
        return self

    def start_server(self) -> None:
        """Start (or restart) the server on its data directory."""
        options = f"-p {self.port} -k {self.dir} -h 127.0.0.1 -F -c max_connections=200"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.dir / "data"),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: as a crash)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new empty database; its URL."""
        self._count += 1
        name = f"t{os.getpid()}_{self._count}"
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}".encode())
        return self.url(name)

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop_server("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
    except subprocess.CalledProcessError as exc:
        log = server.log.read_text() if server.log.exists() else ""
        server.close()
        raise AssertionError(f"PostgreSQL did not start: {exc.stderr}\n{log}") from None
    try:
        yield server
    finally:
        server.close()


def wait_until_down(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            psycopg.connect(url, connect_timeout=1).close()
        except psycopg.OperationalError:
            return
        time.sleep(0.05)
    raise AssertionError("PostgreSQL is still up")
