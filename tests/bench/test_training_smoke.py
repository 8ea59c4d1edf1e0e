"""bench.training trains both ways on a tiny folder and prints one JSON line with both times."""

from __future__ import annotations

import json
from collections import Counter

from bench.training import main, stratified_subset
from tests.helpers.labelled_folder import write_labelled_folder
from training.datasets import list_labelled


def test_training_benchmark_smoke(tmp_path, capsys):
    data = write_labelled_folder(tmp_path / "data", per_class=6, size=40)
    code = main(["--data", str(data), "--image-size", "32", "--epochs", "2", "--views", "1",
                 "--batch-size", "8", "--json"])
    assert code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    result = json.loads(lines[-1])
    assert set(result["models"]) == {"resnet50", "vgg16"}
    for arch in result["models"].values():
        assert arch["cached_seconds"] > 0 and arch["recompute_seconds"] > 0
        assert 0.0 <= arch["cached_val_accuracy"] <= 1.0 and 0.0 <= arch["recompute_val_accuracy"] <= 1.0
    assert result["speedup"] == round(result["recompute_seconds"] / result["cached_seconds"], 2)
    assert result["epochs"] == 2 and result["train_images"] + result["val_images"] == 24


def test_subset_keeps_class_shares(tmp_path):
    data = write_labelled_folder(tmp_path / "data", per_class=10, size=16)
    items = list_labelled(data)
    subset = stratified_subset(items, 20, seed=0)
    assert len(subset) == 20
    assert set(Counter(item.label for item in subset).values()) == {5}
    assert stratified_subset(items, 0, seed=0) == items
