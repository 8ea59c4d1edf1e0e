"""Start long-running children in their own process groups and stop every one of them.

Each child leads a new session, so a terminal's Ctrl-C reaches only the runner, which
then stops the children in reverse start order: SIGTERM to the whole group (gunicorn
workers, celery pool children included), then SIGKILL for whatever outlives the grace
period. A group counts as stopped only when no process in it is left.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)


@dataclass
class Child:
    """One supervised process group."""

    name: str
    argv: list[str]
    process: subprocess.Popen
    log_path: Path | None
    log_handle: IO | None = field(default=None, repr=False)
    env: dict[str, str] = field(default_factory=dict, repr=False)
    cwd: str | Path | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def pgid(self) -> int:
        """The process group id (the child leads its own group)."""
        return self.process.pid


def group_alive(pgid: int) -> bool:
    """True while any process of group ``pgid`` exists (zombies of ours are reaped first)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - only if the id was reused by another user
        return False
    return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


class Supervisor:
    """Owns the children of one local run."""

    def __init__(self) -> None:
        self.children: list[Child] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], log_path: Path | None = None,
              cwd: str | Path | None = None) -> Child:
        """Start ``argv`` in a new session; its output goes to ``log_path`` (or is inherited)."""
        handle = open(log_path, "ab", buffering=0) if log_path else None
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                   stdout=handle, stderr=subprocess.STDOUT if handle else None,
                                   start_new_session=True)
        child = Child(name, argv, process, log_path, handle, dict(env), cwd)
        self.children.append(child)
        logger.debug("started %s (pid %s): %s", name, process.pid, " ".join(argv))
        return child

    def restart(self, child: Child) -> Child:
        """Start a dead child again in its place (same command, environment and log).

        Whatever is left of its process group (a pool child whose leader was killed) is killed
        first, so the new one never shares a port or a queue with a half-dead predecessor.
        """
        _signal_group(child.pgid, signal.SIGKILL)
        _wait_gone(child, 10)  # a killed process lingers until it is reaped
        if child.log_handle:
            child.log_handle.close()
        index = self.children.index(child)
        self.children.remove(child)
        fresh = self.start(child.name, child.argv, child.env, child.log_path, child.cwd)
        self.children.remove(fresh)
        self.children.insert(index, fresh)
        return fresh

    def exited(self) -> Child | None:
        """The first child whose leader has exited, if any."""
        for child in self.children:
            if child.process.poll() is not None:
                return child
        return None

    def stop_all(self, grace_s: float = 15.0, first_signal: int = signal.SIGTERM) -> list[str]:
        """Stop every child group, newest first; return the names that needed SIGKILL."""
        killed: list[str] = []
        for child in reversed(self.children):
            if not self._stop(child, grace_s, first_signal):
                killed.append(child.name)
        for child in self.children:
            if child.log_handle:
                child.log_handle.close()
        self.children.clear()
        return killed

    def _stop(self, child: Child, grace_s: float, first_signal: int) -> bool:
        _signal_group(child.pgid, first_signal)
        if _wait_gone(child, grace_s):
            return True
        logger.warning("%s did not stop within %.0f s; killing its process group", child.name, grace_s)
        _signal_group(child.pgid, signal.SIGKILL)
        _wait_gone(child, 10)
        return False


def _wait_gone(child: Child, seconds: float) -> bool:
    """Wait until no process of the child's group is left; False if some still is after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        child.process.poll()  # reap the leader so it does not linger as a zombie
        if not group_alive(child.pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def tail(path: Path | None, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file ('' if there is none)."""
    if path is None or not path.is_file():
        return ""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 64 * 1024))
        text = handle.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])
