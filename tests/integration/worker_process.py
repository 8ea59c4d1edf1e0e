"""A real `celery -A workers worker` subprocess for integration tests, and polling."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 90


class Worker:
    """A `celery -A workers worker` subprocess; logs go to a file shown when a test fails."""

    def __init__(self, env: dict[str, str], log_path: Path, pool: str) -> None:
        """Start the worker and wait until it consumes."""
        self.log_path = log_path
        command = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q",
                   "inference,training,default", "--pool", pool, "-c", "1", "--loglevel", "INFO",
                   "-n", f"itest-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle"]
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while " ready." not in log_path.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"celery worker did not start:\n{self.output()}")
            time.sleep(0.2)

    def output(self) -> str:
        """Everything the worker logged so far."""
        return self.log_path.read_text()

    def children(self) -> list[int]:
        """Pids of the worker's pool processes (prefork)."""
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.process.pid)],
                             capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self) -> None:
        """Warm shutdown, then kill if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, worker: Worker | None = None) -> None:
    """Poll until predicate() is true, or fail with the worker's log."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            log = worker.output()[-4000:] if worker else ""
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{log}")
        time.sleep(0.2)
