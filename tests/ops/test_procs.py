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


def test_restart_replaces_a_killed_group_in_place(tmp_path):
    """A worker killed as a whole (kill -9 of its group) is started again with the same command."""
    sup = Supervisor()
    sup.start("first", ["sleep", "300"], dict(os.environ))
    worker = sup.start("worker", ["bash", "-c", "echo started; sleep 300 & wait"], dict(os.environ),
                       tmp_path / "worker.log")
    time.sleep(0.3)
    os.killpg(worker.pgid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while sup.exited() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sup.exited() is worker
    fresh = sup.restart(worker)
    assert [c.name for c in sup.children] == ["first", "worker"] and sup.children[1] is fresh
    assert fresh.pgid != worker.pgid and group_alive(fresh.pgid) and not group_alive(worker.pgid)
    time.sleep(0.3)
    assert (tmp_path / "worker.log").read_text().count("started") == 2  # same log, appended
    assert sup.exited() is None
    sup.stop_all(grace_s=5)


def test_the_runner_restarts_a_dead_child_and_gives_up_on_one_that_keeps_dying(tmp_path, monkeypatch):
    """make run keeps the service up when one process dies, and stops when one is broken."""
    import threading

    from scripts import run_local

    monkeypatch.setattr(run_local, "RESTART_WINDOW_S", 60.0)
    lines: list[str] = []
    monkeypatch.setattr(run_local, "say", lines.append)
    sup = Supervisor()
    steady = sup.start("web", ["sleep", "300"], dict(os.environ))
    sup.start("worker", ["bash", "-c", "sleep 0.3; exit 9"], dict(os.environ), tmp_path / "w.log")
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'none.db'}", "SECRET_KEY": "x"}
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(run_local.supervise(sup, env, {"requested": False})))
    thread.start()
    thread.join(timeout=60)
    assert result == [1]
    restarted = [line for line in lines if "worker exited with 9; starting it again" in line]
    assert len(restarted) == run_local.RESTART_LIMIT
    assert any("4 times in 1 min; stopping everything" in line for line in lines)
    assert group_alive(steady.pgid)  # the others were left running until the runner stops them
    sup.stop_all(grace_s=5)
