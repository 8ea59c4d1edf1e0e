"""The worker-gpu launcher: one solo worker per GPU, each pinned to its device."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scripts.gpu_workers import visible_gpus, worker_argv

REPO = Path(__file__).resolve().parents[2]


def test_gpu_ids_from_environment():
    assert visible_gpus({"GPU_IDS": "0, 2"}) == ["0", "2"]


def test_worker_command_is_a_solo_pool_per_gpu():
    argv = worker_argv("1", "inference,default", "INFO")
    assert argv[:4] == ["celery", "-A", "workers", "worker"]
    assert argv[argv.index("--pool") + 1] == "solo"
    assert argv[argv.index("-n") + 1] == "gpu1@%h"


def test_dry_run_pins_each_worker(tmp_path):
    result = subprocess.run([sys.executable, "scripts/gpu_workers.py", "--dry-run"], cwd=REPO,
                            capture_output=True, text=True, env={"GPU_IDS": "0,1", "PATH": "/usr/bin:/bin"},
                            timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["CUDA_VISIBLE_DEVICES=0", "CUDA_VISIBLE_DEVICES=1"]


def test_no_gpu_is_a_clear_error():
    result = subprocess.run([sys.executable, "scripts/gpu_workers.py"], cwd=REPO, capture_output=True,
                            text=True, env={"PATH": "/nonexistent"}, timeout=60)
    assert result.returncode == 2
    assert "no GPU visible" in result.stderr
