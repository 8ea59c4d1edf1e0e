"""Synthetic scans on a chosen side of the fixed evaluation split (training.pool), for retraining tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from tests.helpers.labelled_folder import CLASSES, pattern_image
from training.pool import in_evaluation_split


def split_png(label: int, evaluation: bool, seed: int, size: int = 48) -> tuple[bytes, int]:
    """PNG bytes of class `label`'s pattern whose SHA-256 is (or is not) in the evaluation split,
    and the next seed to try; deterministic for a given seed."""
    while True:
        image = pattern_image(label, size, np.random.default_rng(seed))
        ok, data = cv2.imencode(".png", image)
        assert ok
        seed += 1
        if in_evaluation_split(hashlib.sha256(data.tobytes()).hexdigest()) == evaluation:
            return data.tobytes(), seed


def write_split_folder(root: Path, train_per_class: int = 6, evaluation_per_class: int = 1,
                       size: int = 48, seed: int = 0) -> Path:
    """root/<class>/<n>.png: per class, `train_per_class` files outside the evaluation split and
    `evaluation_per_class` inside it."""
    for label, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        next_seed = seed + 1000 * label
        for index in range(train_per_class + evaluation_per_class):
            data, next_seed = split_png(label, index >= train_per_class, next_seed, size)
            (folder / f"{index:03d}.png").write_bytes(data)
    return root
