"""Score a bundle on a labelled folder through the inference engine: metrics.json and plots."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.progress import ProgressFn

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


class EvaluationError(ValueError):
    """The labelled data does not fit the bundle (unknown classes, nothing decodable)."""


def labels_for(items, kept: list[int], classes: list[str]) -> np.ndarray:
    """Class indices in the bundle's encoder order; unknown class folders are an error."""
    unknown = sorted({item.label for item in items} - set(classes))
    if unknown:
        raise EvaluationError(
            f"class folder(s) {', '.join(unknown)} are not classes of this bundle ({', '.join(classes)})"
        )
    index = {name: i for i, name in enumerate(classes)}
    return np.array([index[items[i].label] for i in kept], dtype=int)


def engine_probabilities(engine, images: np.ndarray, progress: ProgressFn | None = None,
                         raw: bool = False) -> dict[str, np.ndarray]:
    """Run the engine over images batch by batch; stack {model or 'ensemble': [N, C]} as served
    (calibrated), or with `raw` the members' uncalibrated probabilities only (no 'ensemble')."""
    chunks: dict[str, list[np.ndarray]] = {}
    total = len(images)
    predict = engine.member_probabilities if raw else engine.predict_probabilities
    for start in range(0, total, engine.batch_size):
        probs = predict(images[start:start + engine.batch_size])
        for name, value in probs.items():
            chunks.setdefault(name, []).append(np.asarray(value))
        if progress is not None:
            done = min(start + engine.batch_size, total)
            progress("evaluate", done / total, f"classified {done}/{total} scans")
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


@dataclass
class Served:
    """A bundle's answers on decoded images as the workers serve them, and without its temperatures."""

    engine: Any
    precision: str  # the precision the setting resolved to
    probs: dict[str, np.ndarray]  # calibrated, per model and 'ensemble'
    uncalibrated: dict[str, np.ndarray]
    names: list[str]  # the models present, then 'ensemble'


def serve_images(bundle_dir: str | Path, images: np.ndarray, precision: str = "float32", batch_size: int = 32,
                 progress: ProgressFn | None = None) -> Served:
    """Run the bundle's engine at a worker's precision setting over decoded images, one pass."""
    from models.engine import InferenceEngine
    from models.precision import resolve_precision

    used = resolve_precision(precision)
    engine = InferenceEngine.from_bundle(bundle_dir, precision=used, batch_size=batch_size)
    raw = engine_probabilities(engine, images, progress, raw=True)
    probs, uncalibrated = engine.calibrated(raw), engine.uncalibrated(raw)
    names = [n for n in engine.model_names if n in probs] + ["ensemble"]
    return Served(engine, used, probs, uncalibrated, names)


def evaluate_bundle(
    bundle_dir: str | Path,
    data: str | Path,
    report_dir: str | Path,
    progress: ProgressFn | None = None,
    batch_size: int = 32,
    precision: str = "float32",
) -> dict:
    """Classify a labelled folder/zip with the bundle; write metrics.json and PNG plots; return metrics.

    `precision` is a worker's INFERENCE_PRECISION setting ("auto", "float32", "bfloat16"), so the
    figures are those of the models as served; when it resolves to bfloat16 the float32 labels
    are computed too and each model's agreement between the two is reported.
    """
    from models.bundle import verify_bundle
    from models.engine import InferenceEngine
    from training.overlap import training_overlap
    from training.calibration import model_metrics, reliability_bins
    from training.datasets import list_labelled, load_image_array
    from training.metrics import roc_curves
    from training.plots import (plot_accuracy_comparison, plot_confusion_matrix, plot_reliability_diagram,
                                plot_roc_curves)

    manifest = verify_bundle(bundle_dir)
    classes = [str(c) for c in manifest["classes"]]
    items = list_labelled(data)
    # Check class folders before loading networks or decoding: a wrong folder fails fast.
    labels_for(items, [], classes)
    skipped: dict[int, str] = {}
    images, kept = load_image_array(items, int(manifest["image_size"]), on_error="skip", skipped=skipped)
    if len(kept) == 0:
        raise EvaluationError(f"none of the {len(items)} files in {data} could be decoded")
    y_true = labels_for(items, kept, classes)
    served = serve_images(bundle_dir, images, precision, batch_size, progress)
    engine, used, probs, uncalibrated, names = (served.engine, served.precision, served.probs,
                                                served.uncalibrated, served.names)
    agreement = None
    if used != "float32":
        reference = engine_probabilities(InferenceEngine.from_bundle(bundle_dir, batch_size=batch_size), images)
        agreement = {n: float(np.mean(probs[n].argmax(1) == reference[n].argmax(1))) for n in names}
    overlap = training_overlap(bundle_dir, [items[i].sha256 for i in kept], images)
    seen = overlap.pop("overlapping")
    if seen.any():
        log.warning("%d of %d evaluated images were trained or validated on by this bundle (%s exact, "
                    "%d near copies at cosine >= %.2f): their figures measure memory; 'models_unseen' "
                    "scores the others", int(seen.sum()), len(seen), overlap["exact"], overlap["near_copies"],
                    overlap["threshold"])
    metrics = {
        "models": {n: model_metrics(y_true, probs[n], classes) for n in names},
        **calibration_summary(engine, y_true, probs, uncalibrated),
        "overlap_with_training": {**overlap, "images_seen": int(seen.sum()), "images_unseen": int((~seen).sum())},
        **({"models_unseen": {n: model_metrics(y_true[~seen], probs[n][~seen], classes) for n in names}}
           if seen.any() and (~seen).any() else {}),
        "precision": {"setting": precision, "used": used, "label_agreement_with_float32": agreement},
        "files": {
            "listed": len(items),
            "evaluated": len(set(kept)),
            "images": len(kept),  # a multi-frame DICOM counts once per frame
            "skipped": [{"file": items[i].source, "reason": skipped.get(i, "not decodable")}
                        for i in sorted(set(range(len(items))) - set(kept))],
        },
    }

    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    for name in names:
        plot_confusion_matrix(
            metrics["models"][name]["confusion_matrix"], classes,
            f"{name} (accuracy {metrics['models'][name]['accuracy']:.1%})",
            out / f"confusion_{name}.png",
        )
    plot_accuracy_comparison({n: metrics["models"][n]["accuracy"] for n in names}, out / "accuracy.png")
    plot_roc_curves({n: roc_curves(y_true, probs[n], classes) for n in names}, out / "roc_curves.png")
    plot_reliability_diagram({n: reliability_bins(y_true, probs[n]) for n in names},
                             {n: reliability_bins(y_true, uncalibrated[n]) for n in names},
                             out / "reliability.png")
    log.info("evaluated %d scans from %s; report in %s", len(y_true), data, out)
    if progress is not None:
        progress("evaluate", 1.0, f"wrote {out / METRICS_FILE}")
    return metrics


def calibration_summary(engine, y_true: np.ndarray, probs: dict[str, np.ndarray],
                        uncalibrated: dict[str, np.ndarray]) -> dict:
    """The figures beside each model's metrics: ECE and Brier without the bundle's temperatures
    ("uncalibrated"; equal to the served ones for a bundle without calibration), the temperatures,
    and the triage rule's coverage and accuracy on accepted scans (None: the bundle sets no rule)."""
    from training.calibration import brier_score, ece_noise_floor, expected_calibration_error, triage_report

    triage = None
    if engine.triage is not None:
        members = {n: probs[n] for n in engine.model_names}
        triage = triage_report(y_true, probs["ensemble"], members, engine.triage.threshold,
                               engine.triage.min_agreement)
        triage["target_accuracy"] = (engine.manifest.get("triage") or {}).get("target_accuracy")
    return {
        "uncalibrated": {n: {"ece": expected_calibration_error(y_true, p), "brier": brier_score(y_true, p)}
                         for n, p in uncalibrated.items()},
        "calibration": {"temperatures": engine.calibration.temperatures,
                        "ensemble_temperature": engine.calibration.ensemble_temperature,
                        "fitted": bool(engine.manifest.get("calibration")),
                        # The ensemble ECE a perfectly calibrated ensemble would show on these scans.
                        "ensemble_ece_noise_floor": ece_noise_floor(np.max(probs["ensemble"], axis=1))},
        "triage": triage,
    }


def score_bundles(
    bundles: dict[str, str | Path],
    items: list,
    precision: str = "float32",
    batch_size: int = 32,
    progress: ProgressFn | None = None,
) -> dict[str, dict]:
    """Score each bundle on the same labelled items through the inference engine, as served.

    Returns {name: {"models": {model or 'ensemble': metrics}, "size": n}} or, for a bundle that
    cannot be scored (unknown class, load failure), {name: {"error": reason}}. Only items that
    decode for every bundle count, so every figure is over the very same scans.
    """
    from models.bundle import verify_bundle
    from models.engine import InferenceEngine
    from training.calibration import model_metrics
    from training.datasets import load_image_array

    manifests: dict[str, dict] = {}
    results: dict[str, dict] = {}
    for name, path in bundles.items():
        try:
            manifest = verify_bundle(path)
            labels_for(items, [], [str(c) for c in manifest["classes"]])
        except Exception as exc:  # a bundle that cannot be scored is reported, not fatal
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        manifests[name] = manifest
    # Decode once per image size; an item counts only where it decoded at every size.
    decoded: dict[int, tuple[np.ndarray, list[int]]] = {}
    for manifest in manifests.values():
        size = int(manifest["image_size"])
        if size not in decoded:
            decoded[size] = load_image_array(items, size, on_error="skip")
    common = set(range(len(items)))
    for _, kept in decoded.values():
        common &= set(kept)
    for name, manifest in manifests.items():
        classes = [str(c) for c in manifest["classes"]]
        images, kept = decoded[int(manifest["image_size"])]
        # One row per item: multi-frame files without a chosen frame count by their first frame.
        rows = {}
        for row, index in enumerate(kept):
            if index in common and index not in rows:
                rows[index] = row
        order = sorted(rows)
        if not order:
            results[name] = {"error": f"none of the {len(items)} evaluation scans could be decoded"}
            continue
        y_true = labels_for(items, order, classes)
        step = list(manifests).index(name)
        try:
            engine = InferenceEngine.from_bundle(bundles[name], precision=precision, batch_size=batch_size)
            # One overall fraction across the bundles, each its own share.
            report = None if progress is None else (
                lambda stage, fraction, message, name=name, step=step: progress(
                    stage, (step + fraction) / len(manifests), f"{name}: {message}"))
            probs = engine_probabilities(engine, images[[rows[i] for i in order]], report)
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        names = [n for n in engine.model_names if n in probs] + ["ensemble"]
        results[name] = {"models": {n: model_metrics(y_true, probs[n], classes) for n in names},
                         "size": len(order)}
        del engine  # one engine in memory at a time
    return results
