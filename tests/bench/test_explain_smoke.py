"""bench.explain runs on random 32 px networks and prints one JSON line with a timing per model."""

from __future__ import annotations

import json

from bench.explain import main


def test_prints_first_and_median_seconds_per_model(capsys):
    assert main(["--image-size", "32", "--scans", "2"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    record = json.loads(lines[-1])
    assert record["image_size"] == 32 and record["scans"] == 2 and record["bundle"] == "random"
    assert list(record["models"]) == ["resnet50", "vgg16", "custom_cnn", "svm"]
    for entry in record["models"].values():
        assert entry["first_s"] > 0 and entry["median_s"] > 0
    assert record["models"]["svm"]["layer"] == "resnet50/conv5_block3_out"  # explained through ResNet50
