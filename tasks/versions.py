"""Model versions: record a verified bundle once (by digest), activate one, retire the previous."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.base import utcnow
from db.models import ModelVersion, TrainingRun

logger = logging.getLogger(__name__)


def active_version(session: Session) -> ModelVersion | None:
    """The version workers classify with, or None when nothing is active yet."""
    return session.execute(
        select(ModelVersion).where(ModelVersion.status == "active")
        .order_by(ModelVersion.activated.desc().nulls_last(), ModelVersion.id.desc())
    ).scalars().first()


def backbone_summary(manifest: dict[str, Any]) -> tuple[str, str | None]:
    """(mode, sha256) of the backbone weights a bundle was trained from ("none" without backbones)."""
    weights = manifest.get("backbone_weights") or {}
    if "mode" in weights:
        return str(weights.get("mode") or "none"), weights.get("sha256")
    # Older/tiny bundles list one {mode, path, sha256} entry per architecture.
    entries = [w for w in weights.values() if isinstance(w, dict)]
    modes = sorted({str(w.get("mode") or "none") for w in entries}) or ["none"]
    sha = next((w.get("sha256") for w in entries if w.get("sha256")), None)
    return "+".join(modes)[:32], sha


def register_bundle(session: Session, bundle_dir: str | Path, training_run_id: int | None = None
                    ) -> ModelVersion:
    """Verify a bundle folder and record it as a candidate version (the same digest → the same row)."""
    from models.bundle import bundle_digest, verify_bundle

    bundle = Path(bundle_dir).resolve()
    manifest = verify_bundle(bundle)
    digest = bundle_digest(bundle)
    version = session.execute(select(ModelVersion).where(ModelVersion.digest == digest)).scalar_one_or_none()
    if version is None:
        mode, sha256 = backbone_summary(manifest)
        version = ModelVersion(
            digest=digest, bundle_path=str(bundle), manifest=manifest,
            backbone_weights=mode, backbone_sha256=sha256,
            metrics=manifest.get("validation_metrics") or {}, status="candidate")
        session.add(version)
        session.flush()
        logger.info("registered model version %s (%s) from %s", version.id, digest[:12], bundle)
    elif not Path(version.bundle_path).is_dir():
        # Same content, moved folder: remember where it lives now.
        version.bundle_path = str(bundle)
    if training_run_id is not None:
        run = session.get(TrainingRun, training_run_id)
        if run is not None:
            run.model_version_id = version.id
    return version


def activate_version(session: Session, version: ModelVersion, user_id: int | None = None) -> ModelVersion:
    """Make `version` the active one (by `user_id`; None: the gate or the CLI); the previous one is retired."""
    others = session.execute(
        select(ModelVersion).where(ModelVersion.status == "active", ModelVersion.id != version.id)
        .with_for_update()).scalars().all()
    for other in others:
        other.status = "retired"
    if version.status != "active":
        version.status = "active"
        version.activated, version.activated_by = utcnow(), user_id
    session.flush()
    logger.info("activated model version %s; retired %s", version.id, [o.id for o in others] or "none")
    return version
