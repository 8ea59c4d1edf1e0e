"""JSON shapes of jobs, scans, reviews, model versions and training runs (the API contract in one place)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

from db.models import Job, ModelVersion, Prediction, Review, Scan, TrainingRun, User
from models import ENSEMBLE_NAME, MODEL_NAMES

RUN_LOG_TAIL_CHARS = 4000


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC (SQLite hands back naive datetimes, which are UTC here)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def job_progress(job: Job) -> float:
    """Share of scans finished (classified or failed), 0..1."""
    if not job.total:
        return 1.0 if job.status == "done" else 0.0
    return round((job.done + job.failed) / job.total, 4)


def job_json(job: Job) -> dict[str, Any]:
    """GET /api/v1/jobs/<id>."""
    return {
        "id": job.id, "status": job.status, "total": job.total, "done": job.done, "failed": job.failed,
        "progress": job_progress(job), "created": iso(job.created), "finished": iso(job.finished),
        "reused": job.reused, "detail": job.status_detail or "", "sealed": job.sealed,
        "name": job.name, "started": iso(job.started),
    }


def scan_json(scan: Scan, predictions: Iterable[Prediction]) -> dict[str, Any]:
    """One scan with the predictions of the version that classified it."""
    per_model: dict[str, Any] = {}
    ensemble = None
    for pred in predictions:
        if scan.model_version_id is not None and pred.model_version_id != scan.model_version_id:
            continue
        if pred.model_name == ENSEMBLE_NAME:
            ensemble = {"label": pred.label, "probabilities": pred.probabilities,
                        "agreement": pred.agreement, "confidence": pred.confidence,
                        "needs_review": pred.needs_review}
        else:
            per_model[pred.model_name] = {"label": pred.label, "probabilities": pred.probabilities,
                                          "confidence": pred.confidence}
    ordered = {name: per_model[name] for name in MODEL_NAMES if name in per_model}
    ordered.update({k: v for k, v in per_model.items() if k not in ordered})
    return {
        "id": scan.id, "path": scan.path, "frame": scan.frame, "study": scan.study, "status": scan.status,
        "error": scan.error or "", "reused": scan.reused, "model_version": scan.model_version_id,
        "classified": iso(scan.classified_at), "predictions": ordered, "ensemble": ensemble,
    }


def _name(user: User | None) -> str | None:
    return user.name if user is not None else None


def review_json(review: Review | None) -> dict[str, Any] | None:
    """One review: label, note, who and when (and who withdrew it, when)."""
    if review is None:
        return None
    return {"id": review.id, "label": review.label, "note": review.note or "", "by": _name(review.user),
            "at": iso(review.created), "withdrawn": iso(review.withdrawn),
            "withdrawn_by": _name(review.withdrawn_by_user)}


def scan_detail_json(scan: Scan, current: Review | None, history: Iterable[Review]) -> dict[str, Any]:
    """GET /api/v1/scans/<id>: the scan, its predictions, its current review and every review."""
    return {**scan_json(scan, scan.predictions), "job_id": scan.job_id, "sha256": scan.sha256,
            "review": review_json(current), "reviews": [review_json(r) for r in history]}


def training_data_json(version: ModelVersion, run: TrainingRun | None) -> dict[str, Any] | None:
    """What a version was trained on: the manifest's counts plus its run's pool summary."""
    dataset = dict((version.manifest or {}).get("dataset") or {})
    summary = dict(run.data_summary or {}) if run is not None else {}
    if not dataset and not summary:
        return None
    keys = ("folder_files", "reviewed_scans", "overrides", "relabelled", "evaluation")
    return {"size": dataset.get("train", 0) + dataset.get("validation", 0) if dataset else None,
            **{k: dataset[k] for k in ("train", "validation", "near_copies_of_evaluation_dropped") if k in dataset},
            **{k: summary[k] for k in keys if k in summary}}


def model_version_json(version: ModelVersion, run: TrainingRun | None = None) -> dict[str, Any]:
    """GET /api/v1/models entry; `run` is the training run that produced the version, if any."""
    manifest = version.manifest or {}
    weights = manifest.get("backbone_weights") or {}
    return {
        "id": version.id, "status": version.status, "digest": version.digest,
        "created": iso(version.created), "activated": iso(version.activated),
        "activated_by": _name(version.activated_by_user),
        "bundle_path": version.bundle_path, "classes": manifest.get("classes", []),
        "image_size": manifest.get("image_size"),
        "backbone_weights": {"mode": version.backbone_weights, "sha256": version.backbone_sha256,
                             "path": weights.get("path")},
        "metrics": version.metrics or {}, "ensemble_weights": manifest.get("ensemble_weights"),
        "evaluation": version.evaluation, "training_data": training_data_json(version, run),
        "training_run": run.id if run is not None else None,
        # "quick" marks the stopgap first model make run trains before the full one.
        "profile": manifest.get("profile", "full"), "notes": manifest.get("notes") or "",
        "calibration": _calibration_json(manifest), "triage": _triage_json(manifest),
    }


def _calibration_json(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The temperatures the engine applies, or None for an uncalibrated bundle."""
    block = manifest.get("calibration")
    if not block:
        return None
    return {"temperatures": block.get("temperatures") or {},
            "ensemble_temperature": (block.get("ensemble") or {}).get("temperature", 1.0)}


def _triage_json(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The review rule the engine applies (threshold, agreement, target), or None for a bundle without one."""
    block = manifest.get("triage")
    if not block:
        return None
    validation = block.get("validation") or {}
    return {"target_accuracy": block.get("target_accuracy"),
            "confidence_threshold": block.get("confidence_threshold"),
            "min_agreement": block.get("min_agreement"), "target_reached": block.get("target_reached"),
            "validation_coverage": validation.get("coverage"),
            "validation_accepted_accuracy": validation.get("accepted_accuracy")}


def training_run_json(run: TrainingRun) -> dict[str, Any]:
    """GET /api/v1/training-runs/<id>."""
    return {
        "id": run.id, "status": run.status, "trigger": run.trigger, "stage": run.stage,
        "progress": run.progress, "params": run.params or {}, "error": run.error or "",
        "log": (run.log or "")[-RUN_LOG_TAIL_CHARS:], "model_version": run.model_version_id,
        "created": iso(run.created), "started": iso(run.started), "finished": iso(run.finished),
        "data_summary": run.data_summary, "decision": run.decision,
    }
