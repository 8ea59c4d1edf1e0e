"""The benches' image size (bundle's own, else the recipe default) and the memory readings they report."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from bench.memory import process_memory, reset_peak, weights_mib
from bench.sizes import default_image_size, resolve_image_size


def _bundle(tmp_path, size: int):
    (tmp_path / "manifest.json").write_text(json.dumps({"image_size": size, "classes": ["a", "b"]}))
    return tmp_path


def test_default_is_the_training_recipes_size():
    from training.recipe import TrainOptions

    assert default_image_size() == TrainOptions.image_size == 128
    assert resolve_image_size(None, None) == (128, "recipe default")
    assert resolve_image_size(224, None) == (224, "option")


def test_a_bundle_runs_at_its_own_size_and_a_contradicting_option_is_refused(tmp_path):
    bundle = _bundle(tmp_path, 96)
    assert resolve_image_size(None, bundle) == (96, "bundle")
    assert resolve_image_size(96, bundle) == (96, "bundle")
    with pytest.raises(SystemExit, match="differs from the bundle's image_size 96"):
        resolve_image_size(224, bundle)


def test_process_memory_reads_rss_and_its_peak():
    before = process_memory()
    block = np.ones(64 * 1024 * 1024, dtype=np.uint8)  # 64 MiB, touched
    after = process_memory(os.getpid())
    assert after["VmRSS"] >= before["VmRSS"] + 60 and after["VmHWM"] >= after["VmRSS"]
    del block
    if reset_peak():
        assert process_memory()["VmHWM"] < after["VmHWM"]


def test_weights_mib_counts_every_variable_at_its_dtype():
    import keras

    model = keras.Sequential([keras.Input((256,)), keras.layers.Dense(1024), keras.layers.Dense(4)])
    expected = (256 * 1024 + 1024 + 1024 * 4 + 4) * 4 / (1024 * 1024)
    assert weights_mib({"m": model}) == round(expected, 1)
