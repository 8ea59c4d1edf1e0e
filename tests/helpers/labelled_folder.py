"""Write a small synthetic labelled folder (one subfolder per class, distinct patterns) for tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

CLASSES: tuple[str, ...] = ("glioma", "meningioma", "notumor", "pituitary")


def pattern_image(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A grayscale uint8 image whose pattern identifies the class: blob, stripes, ring, corner.

    Position, scale and phase vary from image to image, as real scans do, so two images of a
    class are not near copies of each other (training.similarity groups near copies).
    """
    yy, xx = np.mgrid[0:size, 0:size] / size
    cy, cx = rng.uniform(0.35, 0.65, 2)
    if label == 0:
        signal = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / rng.uniform(0.01, 0.03)))
    elif label == 1:
        signal = (np.sin(xx * rng.uniform(4, 8) * np.pi + rng.uniform(0, 2 * np.pi)) > 0).astype(float)
    elif label == 2:
        radius = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        signal = (np.abs(radius - rng.uniform(0.2, 0.32)) < 0.06).astype(float)
    else:
        side = rng.uniform(0.25, 0.5)
        signal = ((yy < side) & (xx < side * rng.uniform(0.7, 1.3))).astype(float)
    noise = rng.normal(0, 10, size=(size, size))
    return np.clip(20 + 200 * signal + noise, 0, 255).astype(np.uint8)


def write_labelled_folder(
    root: Path, per_class: int = 6, size: int = 48, seed: int = 0, duplicates: int = 0
) -> Path:
    """Create root/<class>/<i>.png; `duplicates` byte-identical copies are added per class."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cv2.imwrite(str(folder / f"{i:03d}.png"), pattern_image(label, size, rng))
        for d in range(duplicates):
            (folder / f"copy{d:02d}.png").write_bytes((folder / f"{d:03d}.png").read_bytes())
    return root
