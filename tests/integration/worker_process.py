"""A real `celery -A workers worker` subprocess for integration tests, and polling."""
from __future__ import annotations

import os
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


VENV_BIN = Path(sys.executable).parent


def clean_env(**settings: str) -> dict[str, str]:
    """A plain shell's environment: the virtualenv's bin first on PATH, HOME, and only `settings`.

    No PYTHONPATH and nothing inherited from the test process, so a worker started with
    it proves the documented commands work as a user types them.
    """
    return {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8", **settings}


class Worker:
    """A `celery -A workers worker` subprocess in its own process group; logs go to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, pool: str, cwd: Path = REPO,
                 queues: str = "inference,training,default", concurrency: int = 1) -> None:
        """Start the worker (the virtualenv's `celery` script, as a user runs it) and wait until it consumes."""
        self.log_path = log_path
        command = [str(VENV_BIN / "celery"), "-A", "workers", "worker", "-Q", queues, "--pool", pool,
                   "-c", str(concurrency), "--loglevel", "INFO",
                   "-n", f"itest-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle"]
        self.log = open(log_path, "w")
        # A session of its own: kill_group() then takes the worker and all its pool processes,
        # as the OOM killer, a node loss or `docker kill` would.
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
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

    def pause_group(self, paused: bool = True) -> None:
        """SIGSTOP (or SIGCONT) the whole process group, so a test can look at the database
        while the worker cannot move on."""
        os.killpg(self.process.pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def kill_group(self) -> None:
        """SIGKILL the worker's whole process group at once: no warm shutdown, nothing acknowledged."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.log.close()

    def stop(self) -> None:
        """Warm shutdown, then kill the group if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if not self.log.closed:
            self.log.close()


class Beat:
    """A `celery -A workers beat` subprocess (it schedules the sweeper)."""

    def __init__(self, env: dict[str, str], log_path: Path, schedule: Path) -> None:
        """Start beat with its schedule file under the test's folder."""
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            [str(VENV_BIN / "celery"), "-A", "workers", "beat", "--schedule", str(schedule),
             "--loglevel", "INFO"], cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def output(self) -> str:
        """Everything beat logged so far."""
        return self.log_path.read_text()

    def stop(self) -> None:
        """Stop beat."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
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
