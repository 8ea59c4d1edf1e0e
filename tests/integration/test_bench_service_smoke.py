"""Smoke test of bench/service.py at toy size: real web server, worker, PostgreSQL, Redis; one JSON line."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import pytest

from tests.helpers.services import suite_redis_url
from tests.integration.worker_process import REPO

pytestmark = pytest.mark.integration


def _scan_folder(root, per_class: int):
    from tests.helpers.tiny_bundle import CLASSES, synthetic_images

    images, labels = synthetic_images(per_class=per_class, image_size=48, seed=2)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i}.jpg"), image)
    return root


def test_bench_load_checks_concurrent_uploads_under_polling(tmp_path, tiny_bundle):
    """bench/load.py at toy size: 3 uploads of 6 scans at once, 6 pollers; every check holds."""
    out = subprocess.run(
        [sys.executable, "bench/load.py", "--data", str(_scan_folder(tmp_path / "scans", 5)), "--uploads", "3",
         "--bundle", str(tiny_bundle),
         "--files", "6", "--pollers", "6", "--poll-interval", "0.2", "--image-size", "32", "--timeout", "300"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert (record["jobs_done"], record["scans"], record["classified"], record["queued"]) == (3, 18, 18, 0)
    assert record["scans_without_exactly_one_prediction_set"] == 0 and record["upload_errors"] == []
    assert record["polls"] > 0 and record["poll_5xx"] == 0 and record["poll_p95_ms"] > 0


@pytest.mark.parametrize("watch, part_files", [("poll", "0"), ("stream", "3")])
def test_bench_service_prints_one_json_line(tmp_path, tiny_bundle, watch, part_files):
    _scan_folder(tmp_path / "scans", 3)
    out = subprocess.run(
        [sys.executable, "-m", "bench.service", "--data", str(tmp_path / "scans"), "--scans", "8",
         "--bundle", str(tiny_bundle),
         "--batch-size", "4", "--image-size", "32", "--pollers", "4", "--poll-interval", "0.1",
         "--watch", watch, "--part-files", part_files,
         "--redis-url", suite_redis_url(3), "--timeout", "300"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["scans"] == record["classified"] == 8 and record["failed"] == 0
    assert record["service_scans_per_s"] > 0 and record["engine_scans_per_s"] > 0
    assert record["service_vs_engine"] == pytest.approx(
        record["service_scans_per_s"] / record["engine_scans_per_s"], rel=0.01)
    # Decoding every file, then classifying (on 8 scans too few to order it against the engine
    # alone), and the service compared with it too
    assert record["engine_with_decoding_scans_per_s"] > 0
    assert record["engine_with_decoding_vs_engine"] == pytest.approx(
        record["engine_with_decoding_scans_per_s"] / record["engine_scans_per_s"], rel=0.01)
    assert record["decode_ms_per_scan"] > 0
    assert record["service_vs_engine_with_decoding"] == pytest.approx(
        record["service_scans_per_s"] / record["engine_with_decoding_scans_per_s"], rel=0.01)
    # The time is the service's record of the job's end, which the bench sees only after it.
    assert 0 < record["service_wall_s"] <= record["seen_done_s"]
    assert record["watch"] == watch and record["poll_errors"] == 0
    if watch == "poll":
        assert record["upload"] == "one request"
        assert record["polls"] > 0 and record["poll_p95_ms"] > 0
    else:  # the client's way: parts of 3 to an open job; every watcher heard the job finish on its stream
        assert record["upload"] == "parts of 3 to an open job"
        assert record["streams_opened"] == record["done_heard"] == 4 and record["streams_refused"] == 0
        assert record["done_lag_p95_ms"] is not None and record["first_event_p95_ms"] > 0
