"""A real PostgreSQL server on 127.0.0.1 for the tests that check the database URL swap.

Debian's PostgreSQL binaries (the Makefile installs package `postgresql` when missing) run a
throwaway cluster in a temp directory: `initdb` with trust auth on loopback only, `postgres` on a
free port, one fresh database per test. Root cannot run PostgreSQL, so as root the cluster runs as
the `postgres` user the Debian package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers.net import free_port


def find_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _as_owner(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


class PostgresServer:
    def __init__(self, data_dir: Path, port: int, process: subprocess.Popen):
        self.data_dir, self.port, self.process = data_dir, port, process

    def create_database(self) -> str:
        """A fresh empty database; returns its SQLAlchemy URL (psycopg 3 driver)."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


@contextmanager
def postgres_server() -> Iterator[PostgresServer | None]:
    """Start a cluster, yield it (None when PostgreSQL is not installed), stop and delete it."""
    initdb, postgres = find_bin("initdb"), find_bin("postgres")
    if not initdb or not postgres:
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="musicops-pg-"))
    data = root / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
    subprocess.run(_as_owner([initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                              "--no-sync"]), check=True, capture_output=True, text=True, cwd=root)
    port = free_port()
    process = subprocess.Popen(
        _as_owner([postgres, "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(data),
                   "-c", "fsync=off", "-c", "max_connections=200"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=root)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = process.stderr.read() if process.stderr else ""
                    raise RuntimeError(f"postgres did not start: {log}") from None
                time.sleep(0.1)
        yield PostgresServer(data, port, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(root, ignore_errors=True)
