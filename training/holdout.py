"""Score a finished bundle once on its untouched test part, beside what memorisation alone scores.

The test part (the fixed evaluation split, training.pool) is never trained on, validated on or
tuned on; it is scored here once, at the end of a run, through the inference engine as served.
Two figures make the number honest: a 1-nearest-neighbour baseline on the same thumbnails the
near-copy grouping uses (what looking up the most similar training picture scores), and the
test scores split by whether a test image still has a close relative in training (cosine >=
NEAR_COPY_REPORT_COSINE, looser than the grouping threshold, so this subset is not empty by
construction).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training.progress import ProgressFn

TEST_METRICS_FILE = "test_metrics.json"
NEAR_COPY_REPORT_COSINE = 0.95
"""A test image whose most similar training thumbnail reaches this cosine "has a near copy"."""


def _subset(y_true: np.ndarray, predicted: dict[str, np.ndarray], mask: np.ndarray) -> dict:
    count = int(mask.sum())
    return {"images": count, **{f"{name}_accuracy": (float(np.mean(labels[mask] == y_true[mask])) if count else None)
                                for name, labels in predicted.items()}}


def score_test_part(bundle_dir: str | Path, test_items: list, train_thumbs: np.ndarray, train_labels: np.ndarray,
                    precision: str = "float32", batch_size: int = 32,
                    progress: ProgressFn | None = None) -> dict:
    """Metrics of every model and the ensemble on `test_items`, a 1-NN baseline, near-copy subsets.

    `train_thumbs` / `train_labels` (class indices in the bundle's order) are the training
    images' thumbnails (training.similarity.thumbnails) and labels. Writes nothing.
    """
    from models.bundle import verify_bundle
    from training.datasets import load_image_array
    from training.calibration import model_metrics
    from training.evaluate import calibration_summary, labels_for, serve_images
    from training.metrics import classification_metrics
    from training.similarity import nearest_cosine, thumbnails

    manifest = verify_bundle(bundle_dir)
    classes = [str(c) for c in manifest["classes"]]
    images, kept = load_image_array(test_items, int(manifest["image_size"]), on_error="skip")
    if len(kept) == 0:
        return {"images": 0, "error": "no test image could be decoded"}
    y_true = labels_for(test_items, kept, classes)
    served = serve_images(bundle_dir, images, precision, batch_size, progress)
    probs = served.probs
    metrics = {n: model_metrics(y_true, probs[n], classes) for n in served.names}
    neighbour, cosine = nearest_cosine(thumbnails(images), np.asarray(train_thumbs, dtype=np.float32))
    baseline = np.asarray(train_labels)[neighbour] if len(train_thumbs) else np.full(len(y_true), -1)
    metrics["nearest_neighbour_baseline"] = classification_metrics(
        y_true, np.eye(len(classes))[np.clip(baseline, 0, None)] * (baseline >= 0)[:, None], classes)
    predicted = {"ensemble": probs["ensemble"].argmax(1), "baseline": baseline}
    near = cosine >= NEAR_COPY_REPORT_COSINE
    return {
        "images": int(len(y_true)),
        "files_skipped": len(test_items) - len(set(kept)),
        "precision": served.precision,
        "models": metrics,
        # ECE/Brier without the temperatures, and the review rule's coverage and accepted accuracy.
        **calibration_summary(served.engine, y_true, probs, served.uncalibrated),
        "near_copy_cosine": NEAR_COPY_REPORT_COSINE,
        "with_near_copy_in_training": _subset(y_true, predicted, near),
        "without_near_copy_in_training": _subset(y_true, predicted, ~near),
    }


def write_test_metrics(bundle_dir: str | Path, scored: dict) -> Path:
    """Write the test part's figures beside the bundle's manifest (not a model file: not hashed)."""
    path = Path(bundle_dir) / TEST_METRICS_FILE
    path.write_text(json.dumps(scored, indent=2))
    return path
