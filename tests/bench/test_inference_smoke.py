"""bench.inference runs end to end on two scans and prints one JSON line with every field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import bench.inference
from bench.inference import main

REPO = Path(__file__).resolve().parents[2]
FIELDS = (
    "naive_scans_per_s", "batched_scans_per_s", "flops_per_scan", "gemm_gflops_fp32", "limit_scans_per_s",
)
BF16_FIELDS = ("bf16_scans_per_s", "bf16_top1_agreement", "bf16_vs_batched", "bf16_networks", "bf16_runs")
ARGS = ["--scans", "2", "--batch-size", "2", "--image-size", "32", "--repeats", "1", "--gemm-seconds", "0.5",
        "--backbone-weights", "none", "--json"]


def _scans(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("glioma", "notumor"):
        (root / cls).mkdir()
        image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        cv2.imwrite(str(root / cls / "scan.jpg"), image)
        (root / cls / "notes.txt").write_text("not a scan")  # skipped like the service skips it
    return root


def _run(root: Path, capsys) -> dict:
    code = main(["--data", str(root), *ARGS])
    assert code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1
    return json.loads(lines[0])


def test_benchmark_smoke(tmp_path, capsys):
    from models.precision import bfloat16_supported

    result = _run(_scans(tmp_path), capsys)
    for field in FIELDS:
        assert result[field] > 0, field
    assert result["bf16_supported"] is bfloat16_supported()
    if result["bf16_supported"]:
        assert result["bf16_scans_per_s"] > 0 and 0.0 <= result["bf16_top1_agreement"] <= 1.0
    else:
        assert all(result[field] is None for field in BF16_FIELDS)
    assert result["scans"] == 2 and result["scans_decoded"] == 2 and result["image_size"] == 32
    assert result["flops_per_scan"] == sum(result["flops_per_model"].values())


def test_without_hardware_bf16_the_bf16_fields_are_null(tmp_path, capsys, monkeypatch):
    import models.precision

    # Stands in for a CPU without AVX512-BF16/AMX and no GPU: the emulated path must not be timed.
    monkeypatch.setattr(models.precision, "bfloat16_supported", lambda: False)
    result = _run(_scans(tmp_path), capsys)
    assert result["bf16_supported"] is False
    for field in BF16_FIELDS:
        assert field in result and result[field] is None, field
    assert result["batched_scans_per_s"] > 0


def test_batched_timing_counts_only_scans_that_decode(tmp_path):
    from models.engine import InferenceEngine

    root = _scans(tmp_path)
    good = sorted(root.rglob("*.jpg"))
    broken = root / "glioma" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    images = np.stack([bench.inference.load_scan(p, 32) for p in good])
    bundle = bench.inference.fresh_bundle(32, ["glioma", "notumor"], images, np.array([0, 1]))
    engine = InferenceEngine(bundle, precision="float32", batch_size=2)
    rate, labels = bench.inference.time_batched(engine, [good[0], broken, good[1]], batch_size=2)
    assert list(labels) == [good[0], good[1]] and all(label in (0, 1) for label in labels.values())
    assert rate > 0


def test_runs_as_a_script_without_pythonpath(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KERAS_BACKEND": "tensorflow"}
    (tmp_path / "empty").mkdir()
    # Gets past the project imports (training.datasets) to the data check.
    done = subprocess.run([sys.executable, str(REPO / "bench" / "inference.py"), "--data", str(tmp_path / "empty")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert "ModuleNotFoundError" not in done.stderr and "has no class subfolders" in done.stderr, done.stderr
    # bench/service.py needs PostgreSQL and Redis to run; check that its guard makes the project importable.
    probe = ("import runpy, sys\n"
             "sys.argv = ['service.py', '--help']\n"
             "try:\n"
             f"    runpy.run_path({str(REPO / 'bench' / 'service.py')!r}, run_name='__main__')\n"
             "except SystemExit:\n"
             "    pass\n"
             "import db.migrate, models.bundle\n"
             "print('importable')\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "importable" in done.stdout, done.stderr


def test_forest_threads_bench_prints_both_settings(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "bench" / "forest_threads.py"), "--rounds", "2", "--trees", "5"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(record["ms_per_batch_n_jobs_all"]) == len(record["ms_per_batch_n_jobs_1"]) == 3
    assert record["trees"] == 5 and record["speedup"] > 0
