"""JSON shapes of jobs, scans, model versions and training runs (the API contract in one place)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

from db.models import Job, ModelVersion, Prediction, Scan, TrainingRun
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
                        "agreement": pred.agreement, "confidence": pred.confidence}
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


def model_version_json(version: ModelVersion) -> dict[str, Any]:
    """GET /api/v1/models entry."""
    manifest = version.manifest or {}
    weights = manifest.get("backbone_weights") or {}
    return {
        "id": version.id, "status": version.status, "digest": version.digest,
        "created": iso(version.created), "activated": iso(version.activated),
        "bundle_path": version.bundle_path, "classes": manifest.get("classes", []),
        "image_size": manifest.get("image_size"),
        "backbone_weights": {"mode": version.backbone_weights, "sha256": version.backbone_sha256,
                             "path": weights.get("path")},
        "metrics": version.metrics or {}, "ensemble_weights": manifest.get("ensemble_weights"),
    }


def training_run_json(run: TrainingRun) -> dict[str, Any]:
    """GET /api/v1/training-runs/<id>."""
    return {
        "id": run.id, "status": run.status, "trigger": run.trigger, "stage": run.stage,
        "progress": run.progress, "params": run.params or {}, "error": run.error or "",
        "log": (run.log or "")[-RUN_LOG_TAIL_CHARS:], "model_version": run.model_version_id,
        "created": iso(run.created), "started": iso(run.started), "finished": iso(run.finished),
    }
