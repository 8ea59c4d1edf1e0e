"""bench.inference runs end to end on two scans and prints one JSON line with every field."""

from __future__ import annotations

import json

import cv2
import numpy as np

from bench.inference import main

FIELDS = (
    "naive_scans_per_s", "batched_scans_per_s", "bf16_scans_per_s", "bf16_top1_agreement",
    "flops_per_scan", "gemm_gflops_fp32", "limit_scans_per_s",
)


def test_benchmark_smoke(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for cls in ("glioma", "notumor"):
        (tmp_path / cls).mkdir()
        image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / cls / "scan.jpg"), image)
    code = main(["--data", str(tmp_path), "--scans", "2", "--batch-size", "2", "--image-size", "32",
                 "--repeats", "1", "--gemm-seconds", "0.5", "--backbone-weights", "none", "--json"])
    assert code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1
    result = json.loads(lines[0])
    for field in FIELDS:
        assert result[field] > 0, field
    assert 0.0 <= result["bf16_top1_agreement"] <= 1.0
    assert result["scans"] == 2 and result["image_size"] == 32
    assert result["flops_per_scan"] == sum(result["flops_per_model"].values())
