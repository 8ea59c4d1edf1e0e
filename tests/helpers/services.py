"""Connections to the real services the tests use, failing with a plain message when one is down."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest


REDIS_DBS_PER_WORKER = 4
"""Redis databases each pytest-xdist worker owns: 0 general, 1 worker broker, 2 web, 3 benches."""


def suite_redis_url(slot: int) -> str:
    """The Redis URL of one of the suite's databases (slot 0-3), distinct per pytest-xdist worker.

    TEST_REDIS_URL names the first worker's first database (default db 11, so it owns 11-14);
    worker gwN owns the four below that of gwN-1 (gw1: 7-10, gw2: 3-6), because tests flush
    their databases and two workers must never share one.
    """
    base = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
    prefix, _, first = base.rpartition("/")
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    number = int(first or 0) + slot - REDIS_DBS_PER_WORKER * worker
    if not 0 <= slot < REDIS_DBS_PER_WORKER or number < 0:
        raise RuntimeError(f"no Redis database for slot {slot} of xdist worker {worker} below {base}: "
                           "run fewer workers or set TEST_REDIS_URL to a higher database")
    return f"{prefix}/{number}"


def redis_client(url: str, *, flush: bool) -> Any:
    """A redis-py client on `url` (its db flushed when `flush`), or fail the test saying how to start Redis."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(url)
    try:
        client.flushdb() if flush else client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {url}: {exc}. Start it (see README).")
    return client


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(check, seconds: float, what: str) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {seconds:.0f} s")
        time.sleep(0.1)


class PrivateRedis:
    """A memory-only redis-server of a test's own, which the test may stop and restart (losing all keys)."""

    def __init__(self, folder: Path) -> None:
        """Pick a port and start the server."""
        import shutil

        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.skip("redis-server is not installed")
        self.folder, self.port = folder, free_port()
        self.process: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        """redis://127.0.0.1:PORT/0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (again) on the same port, empty."""
        import redis

        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def answers() -> bool:
            try:
                return bool(redis.Redis.from_url(self.url, socket_timeout=0.5).ping())
            except redis.exceptions.ConnectionError:
                return False

        _wait(answers, 15, "the private redis-server")

    def stop(self) -> None:
        """Kill the server: every queued message is gone, as after a restart without persistence."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class PrivatePostgres:
    """A PostgreSQL cluster of a test's own (initdb as the postgres user), which the test may stop."""

    def __init__(self) -> None:
        """Create the cluster in a fresh folder owned by postgres, and start it."""
        import glob
        import os
        import shutil
        import tempfile

        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins or shutil.which("runuser") is None or os.geteuid() != 0:
            pytest.skip("a private PostgreSQL needs root, runuser and /usr/lib/postgresql/*/bin")
        self.bin = Path(bins[-1]).parent
        self.folder = Path(tempfile.mkdtemp(prefix="mri-pg-"))
        shutil.chown(self.folder, "postgres")
        self.port = free_port()
        self._as_postgres(["initdb", "-D", str(self.folder / "data"), "-A", "trust", "-U", "postgres"])
        self.start()

    @property
    def url(self) -> str:
        """SQLAlchemy URL of its `postgres` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, command: list[str]) -> None:
        done = subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / command[0]), *command[1:]],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {done.stdout}\n{done.stderr}")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=200")
        self._as_postgres(["pg_ctl", "-D", str(self.folder / "data"), "-o", options,
                           "-l", str(self.folder / "log"), "-w", "start"])

    def stop(self) -> None:
        """Stop the server now (connections are cut, as when the database goes away)."""
        self._as_postgres(["pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop"])

    def remove(self) -> None:
        """Stop the server if it runs and delete the cluster."""
        import shutil

        try:
            self.stop()
        except RuntimeError:
            pass
        shutil.rmtree(self.folder, ignore_errors=True)
