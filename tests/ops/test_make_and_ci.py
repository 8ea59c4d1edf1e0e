"""Makefile targets, the venv stamp, the pytest wrapper and .ci/run."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def make_targets() -> set[str]:
    """Targets GNU make knows from the Makefile (its database, without running anything)."""
    result = subprocess.run(["make", "-pRrq", "-f", "Makefile", ":"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    return set(re.findall(r"^([a-zA-Z][\w-]*):", result.stdout, re.M))


def test_makefile_has_the_documented_targets():
    assert {"run", "test", "lint", "bench", "train", "clean", "help", "venv", "venv-dev"} <= make_targets()


def test_make_test_runs_pytest_after_the_dev_venv():
    plan = subprocess.run(["make", "-n", "test"], cwd=REPO, capture_output=True, text=True, timeout=60).stdout
    lines = plan.splitlines()
    assert any("ensure_venv.sh dev requirements.txt requirements-dev.txt" in line for line in lines)
    assert any("scripts/run_tests.sh" in line for line in lines)


def test_make_run_starts_the_local_runner():
    plan = subprocess.run(["make", "-n", "run"], cwd=REPO, capture_output=True, text=True, timeout=60).stdout
    assert "-m scripts.run_local" in plan
    assert "ensure_venv.sh run requirements.txt" in plan


def run_tests_wrapper(tmp_path: Path, test_source: str | None) -> subprocess.CompletedProcess:
    folder = tmp_path / "suite"
    folder.mkdir()
    if test_source is not None:
        (folder / "test_sample.py").write_text(test_source)
    env = {**os.environ, "VENV": str(Path(sys.executable).parents[1])}
    return subprocess.run([str(REPO / "scripts" / "run_tests.sh"), "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(folder), str(folder)],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)


def test_no_tests_collected_is_a_failure(tmp_path):
    result = run_tests_wrapper(tmp_path, None)
    assert result.returncode == 1
    assert "collected no tests" in result.stderr


def test_wrapper_passes_pytest_results_through(tmp_path):
    assert run_tests_wrapper(tmp_path, "def test_ok():\n    assert True\n").returncode == 0


def test_wrapper_reports_failures(tmp_path):
    assert run_tests_wrapper(tmp_path, "def test_bad():\n    assert 1 == 2\n").returncode == 1


def test_venv_stamp_skips_a_second_install_and_follows_requirements(tmp_path):
    requirements = tmp_path / "req.txt"
    requirements.write_text("# nothing to install\n")
    venv = tmp_path / "venv"
    env = {**os.environ, "VENV": str(venv), "PYTHON": sys.executable, "VENV_UPGRADE_PIP": "0"}
    script = [str(REPO / "scripts" / "ensure_venv.sh"), "t", str(requirements)]

    first = subprocess.run(script, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "creating" in first.stdout and "installing" in first.stdout
    stamps = sorted(p.name for p in venv.glob(".stamp-t-*"))
    assert len(stamps) == 1
    # The project itself is installed (its dependencies come from the requirements): it
    # imports from another folder with no PYTHONPATH.
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    found = subprocess.run([str(venv / "bin" / "python"), "-c", "import config.settings; print(config.__file__)"], cwd=tmp_path, env=clean, capture_output=True,
                           text=True, timeout=120)
    assert found.returncode == 0 and found.stdout.strip() == str(REPO / "config" / "__init__.py"), found.stderr

    second = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and second.stdout == ""

    requirements.write_text("# changed\n")
    third = subprocess.run(script, env=env, capture_output=True, text=True, timeout=300)
    assert "installing" in third.stdout and "creating" not in third.stdout
    assert sorted(p.name for p in venv.glob(".stamp-t-*")) != stamps
    assert len(list(venv.glob(".stamp-t-*"))) == 1


def test_ci_script_is_executable_and_runs_make_test():
    script = REPO / ".ci" / "run"
    assert os.access(script, os.X_OK)
    mode = subprocess.run(["git", "ls-files", "-s", ".ci/run"], cwd=REPO, capture_output=True,
                          text=True).stdout.split()
    if mode:  # committed: the executable bit must be in git too, for a clean clone
        assert mode[0] == "100755"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash")
    assert re.search(r"^make test$", text, re.M)
    assert "pg_ctlcluster --skip-systemctl-redirect" in text
    assert 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ""' in text
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
