"""Smoke test of bench/service.py at toy size: real web server, worker, PostgreSQL, Redis; one JSON line."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import pytest

from tests.integration.worker_process import REPO

pytestmark = pytest.mark.integration


def test_bench_service_prints_one_json_line(tmp_path):
    from tests.helpers.tiny_bundle import CLASSES, synthetic_images

    images, labels = synthetic_images(per_class=3, image_size=48, seed=2)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = tmp_path / "scans" / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i}.jpg"), image)
    out = subprocess.run(
        [sys.executable, "-m", "bench.service", "--data", str(tmp_path / "scans"), "--scans", "8",
         "--batch-size", "4", "--image-size", "32", "--pollers", "4", "--poll-interval", "0.1",
         "--redis-url", "redis://127.0.0.1:6379/14", "--timeout", "300"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["scans"] == record["classified"] == 8 and record["failed"] == 0
    assert record["service_scans_per_s"] > 0 and record["engine_scans_per_s"] > 0
    assert record["service_vs_engine"] == pytest.approx(
        record["service_scans_per_s"] / record["engine_scans_per_s"], rel=0.01)
    assert record["polls"] > 0 and record["poll_errors"] == 0 and record["poll_p95_ms"] > 0
