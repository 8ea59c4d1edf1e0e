"""The supervisor stops whole process groups, grandchildren included."""
from __future__ import annotations

import os
import signal
import sys
import time

from scripts.procs import Supervisor, group_alive, tail


def test_stop_all_ends_children_and_grandchildren(tmp_path):
    sup = Supervisor()
    child = sup.start("shell", ["bash", "-c", "sleep 300 & sleep 300 & wait"], dict(os.environ),
                      tmp_path / "shell.log")
    time.sleep(0.3)
    pgid = child.pgid
    assert os.getpgid(child.process.pid) == pgid != os.getpgrp()
    assert group_alive(pgid)
    assert sup.stop_all(grace_s=5) == []
    assert not group_alive(pgid)
    assert sup.children == []


def test_a_child_ignoring_sigterm_is_killed(tmp_path):
    sup = Supervisor()
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(300)"
    child = sup.start("stubborn", [sys.executable, "-c", code], dict(os.environ), tmp_path / "s.log")
    deadline = time.monotonic() + 10
    while "up" not in tail(tmp_path / "s.log") and time.monotonic() < deadline:
        time.sleep(0.1)
    started = time.monotonic()
    assert sup.stop_all(grace_s=1) == ["stubborn"]
    assert time.monotonic() - started < 8
    assert child.process.returncode == -signal.SIGKILL
    assert not group_alive(child.pgid)


def test_exited_reports_the_child_that_died(tmp_path):
    sup = Supervisor()
    sup.start("long", ["sleep", "300"], dict(os.environ))
    sup.start("short", ["bash", "-c", "echo bye; exit 3"], dict(os.environ), tmp_path / "short.log")
    deadline = time.monotonic() + 10
    while sup.exited() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    dead = sup.exited()
    assert dead is not None and dead.name == "short" and dead.process.returncode == 3
    assert tail(dead.log_path) == "bye"
    sup.stop_all(grace_s=5)
