"""`python -m training calibrate`: refit a finished bundle's calibration and review threshold post hoc.

For bundles trained before calibration existed (or to refit with another review target): the
bundle's validation items (its dataset.tsv, found by content in the labelled folder) go through
the inference engine uncalibrated, training.calibration.fit_calibration fits what training
would have fitted, and a new bundle folder is written with the same model files (their hashes
unchanged) and a manifest carrying the new "calibration", "triage", ensemble weights and
calibrated validation metrics. When the bundle held the fixed evaluation split out (a CLI run's
test part, a service run's gate split), both bundles are scored on it from one pass of the
models (calibration_report.json beside the new manifest): nothing was fitted on it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from training.progress import ProgressFn

log = logging.getLogger(__name__)

REPORT_FILE = "calibration_report.json"
# Files beside the manifest that describe the training run and stay true for the copy.
_KEPT_BESIDE = ("dataset.tsv", "plots")


class CalibrationError(ValueError):
    """The bundle or the folder cannot be calibrated (no dataset.tsv, validation items missing)."""


def copy_bundle(src: str | Path, out: str | Path, updates: Mapping[str, Any]) -> dict:
    """Copy a verified bundle's model files (hashes checked again) to `out` with its manifest updated by
    `updates` (top-level keys replaced); the manifest is written last. Returns the new manifest."""
    from models.bundle import MANIFEST_NAME, verify_bundle

    source, target = Path(src), Path(out)
    if source.resolve() == target.resolve():
        raise CalibrationError("--out must be a new folder, not the bundle itself")
    if (target / MANIFEST_NAME).exists():
        raise CalibrationError(f"{target} already holds a bundle; choose a new folder")
    manifest = verify_bundle(source)
    target.mkdir(parents=True, exist_ok=True)
    for name in manifest["files"]:
        shutil.copyfile(source / name, target / name)
    for name in _KEPT_BESIDE:
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name, dirs_exist_ok=True)
        elif (source / name).is_file():
            shutil.copyfile(source / name, target / name)
    new = {**manifest, **updates}
    tmp = target / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(new, indent=2, sort_keys=True))
    os.replace(tmp, target / MANIFEST_NAME)
    verify_bundle(target)  # the copied files match the hashes the manifest lists
    return new


def validation_items(bundle_dir: Path, data: str | Path) -> tuple[list, list, list]:
    """(validation items, training items, test-part items) of a bundle, found by content in `data`.

    Labels are the ones dataset.tsv recorded (what the bundle was validated with)."""
    import dataclasses

    from training.datasets import list_labelled
    from training.pool import build_pool
    from training.recipe import DATASET_LIST, read_dataset_list

    listing = bundle_dir / DATASET_LIST
    if not listing.is_file():
        raise CalibrationError(f"{bundle_dir} has no {DATASET_LIST}: its validation items are unknown")
    rows = read_dataset_list(listing)
    pool = build_pool(list_labelled(data), [])
    by_key = {(item.sha256, item.frame): item for item in pool.train}
    sides: dict[str, list] = {"train": [], "validation": []}
    missing = 0
    for row in rows:
        if row["split"] not in sides:  # the held-out test part: never used to fit anything
            continue
        frame = int(row["frame"]) if row["frame"] else None
        item = by_key.get((row["sha256"], frame))
        if item is None:
            missing += 1
            continue
        sides[row["split"]].append(dataclasses.replace(item, label=row["label"]))
    if missing:
        log.warning("%d item(s) of %s are not in %s", missing, DATASET_LIST, data)
    if not sides["validation"]:
        raise CalibrationError(f"none of the bundle's validation items are in {data}")
    return sides["validation"], sides["train"], pool.evaluation


def calibrate_bundle(bundle_dir: str | Path, data: str | Path, out: str | Path,
                     target_accuracy: float, batch_size: int = 32, test_part: bool = True,
                     progress: ProgressFn | None = None) -> dict:
    """Fit calibration and the review threshold on the bundle's validation items; write the new bundle
    to `out` with calibration_report.json (validation and, when held out, test figures before and
    after); return the report."""
    from models.bundle import bundle_digest, verify_bundle
    from models.engine import InferenceEngine
    from training.calibration import fit_calibration, model_metrics
    from training.datasets import load_image_array
    from training.evaluate import engine_probabilities, labels_for

    source = Path(bundle_dir)
    manifest = verify_bundle(source)
    if not 0.0 < target_accuracy <= 1.0:
        raise CalibrationError(f"--review-target-accuracy must be above 0 and at most 1, got {target_accuracy}")
    classes = [str(c) for c in manifest["classes"]]
    size = int(manifest["image_size"])
    val_items, _, test_items = validation_items(source, data)
    images, kept = load_image_array(val_items, size, on_error="skip")
    y_val = labels_for(val_items, kept, classes)
    engine = InferenceEngine.from_bundle(source, batch_size=batch_size)
    names = list(engine.model_names)
    raw = engine_probabilities(engine, images, progress, raw=True)
    del images
    fit = fit_calibration({n: raw[n] for n in names}, y_val, target_accuracy)
    ensemble = fit.ensemble_fit
    updates = {
        "calibration": fit.manifest,
        "triage": fit.triage,
        "ensemble_weights": ensemble.weights,
        "ensemble_fit": {**(manifest.get("ensemble_fit") or {}), "method": ensemble.method,
                         "validation_accuracy": ensemble.accuracy, "best_member": ensemble.best_member,
                         "best_member_accuracy": ensemble.best_member_accuracy},
        "validation_metrics": {n: model_metrics(y_val, p, classes) for n, p in fit.probabilities.items()},
        "recalibrated": {"from": str(source), "digest": bundle_digest(source), "data": str(data),
                         "validation_images": int(len(y_val)),
                         "at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    }
    new_manifest = copy_bundle(source, out, updates)
    report: dict[str, Any] = {"bundle": str(out), "validation": fit.manifest["validation"],
                              "triage": fit.triage, "test": None}
    # The evaluation split was never trained on (nor were its near copies) when the bundle held it
    # out: a CLI run's test part, or a service run's gate split. Scored here as each bundle serves it.
    if test_part and manifest.get("evaluation_split", {}).get("held_out") and test_items:
        report["test"] = _score_test(engine, new_manifest, test_items, classes, size, progress)
    (Path(out) / REPORT_FILE).write_text(json.dumps(report, indent=2))
    return report


def _score_test(engine, new_manifest: Mapping[str, Any], items: list, classes: list[str], size: int,
                progress: ProgressFn | None) -> dict:
    """ECE, Brier, accuracy and the review rule's coverage on the test items: as the old bundle
    (`engine`) serves them ("before") and as the new one will ("after"), from one pass of the models."""
    from models.calibration import Calibration, normalised_weights, served_probabilities
    from training.calibration import brier_score, ece_noise_floor, expected_calibration_error, triage_report
    from training.datasets import load_image_array
    from training.evaluate import engine_probabilities, labels_for

    images, kept = load_image_array(items, size, on_error="skip")
    y = labels_for(items, kept, classes)
    raw = engine_probabilities(engine, images, progress, raw=True)
    names = list(engine.model_names)
    served = {"before": engine.calibrated(raw),
              "after": served_probabilities(raw, names, normalised_weights(new_manifest["ensemble_weights"], names),
                                            Calibration.from_manifest(new_manifest))}
    rules = {"before": engine.manifest.get("triage"), "after": new_manifest["triage"]}
    out: dict[str, Any] = {"images": int(len(y))}
    for when, probs in served.items():
        out[when] = {n: {"accuracy": float(np.mean(p.argmax(1) == y)), "ece": expected_calibration_error(y, p),
                         "brier": brier_score(y, p)} for n, p in probs.items()}
        rule = rules[when]
        out[f"triage_{when}"] = None if not rule else triage_report(
            y, probs["ensemble"], {n: probs[n] for n in names}, rule.get("confidence_threshold"),
            int(rule.get("min_agreement", 0)))
    out["triage"] = out["triage_after"]
    out["ece_noise_floor"] = ece_noise_floor(served["after"]["ensemble"].max(axis=1))
    return out


def _brief(metrics: Mapping[str, Any]) -> dict:
    return {k: metrics.get(k) for k in ("accuracy", "ece", "brier")}


def summary_rows(report: Mapping[str, Any]) -> list[list[str]]:
    """Per model: validation ECE before/after and accuracy, test ECE before/after (when scored)."""
    val = report["validation"]
    test = report.get("test") or {}
    rows = []
    for name in val["after"]:
        before, after = val["before"].get(name, {}), val["after"][name]
        test_before = (test.get("before") or {}).get(name) or {}
        test_after = (test.get("after") or {}).get(name) or {}
        rows.append([name, _fmt(before.get("ece")), _fmt(after.get("ece")), _fmt(before.get("accuracy")),
                     _fmt(after.get("accuracy")), _fmt(test_before.get("ece")), _fmt(test_after.get("ece")),
                     _fmt(test_after.get("accuracy"))])
    return rows


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4f}"


SUMMARY_HEADER = ["model", "val_ece_before", "val_ece_after", "val_acc_before", "val_acc_after",
                  "test_ece_before", "test_ece_after", "test_acc"]
