"""tasks.explain_scan: a Grad-CAM overlay of one scan by one model, computed on the inference queue and
cached as a PNG under DATA_DIR/explanations/<model version>/<scan>-<model>.png.

The web asks with `request_explanation`: the cached PNG when there is one, else it queues the task
once (a `.pending` marker beside the PNG stops a second send while the first waits) and the
caller polls. A failed computation leaves its reason in an `.error` file, which the next request
reports once and removes, so the request after that tries again. A `.json` sidecar keeps the
share of the map that is warm (`heat_share`, 0 when no region raised the score), which the API
sends as `X-Heatmap-Share` so the page can say "nothing" rather than show a plain scan unexplained.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import shared_task
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from config.storage import blob_path
from db.models import ModelVersion, Scan
from tasks import runtime

logger = logging.getLogger(__name__)

TASK_NAME = "tasks.explain_scan"
# A request older than this whose PNG never came (its message lost, its worker gone) is sent again.
# It is long, because the task waits behind whatever classify batches fill the inference queue.
PENDING_STALE_S = 900
_lock = threading.Lock()
# (model version id, bundle path) -> models.explain.Explainer; one entry, as the engine cache.
_explainers: dict[tuple[int, str], Any] = {}


class ExplanationError(RuntimeError):
    """The explanation cannot be made (scan, stored file, model version or model missing or unreadable)."""


@dataclass(frozen=True)
class ExplanationState:
    """What a request found: 'ready' (the PNG at `path`), 'queued' (sent now or earlier), or 'failed'."""

    status: str
    path: Path
    detail: str = ""
    heat_share: float | None = None  # share of the map the overlay colours (None: not recorded)


def explanations_dir(settings: Settings) -> Path:
    """DATA_DIR/explanations: one folder per model version, deletable at any time (a cache)."""
    return settings.data_dir / "explanations"


def explanation_path(settings: Settings, model_version_id: int, scan_id: int, model: str) -> Path:
    """Where the overlay PNG of this scan by this model of this version is cached."""
    return explanations_dir(settings) / str(int(model_version_id)) / f"{int(scan_id)}-{model}.png"


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.stem + suffix)


def _claim_pending(marker: Path) -> bool:
    """Create the pending marker; False when a fresh one exists (the task is already on its way)."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        return True
    except FileExistsError:
        try:
            age = time.time() - marker.stat().st_mtime
        except FileNotFoundError:  # finished in between: claim it afresh
            return _claim_pending(marker)
        if age < PENDING_STALE_S:
            return False
        os.utime(marker)  # stale: this request sends it again
        return True


def request_explanation(settings: Settings, scan_id: int, model_version_id: int,
                        model: str) -> ExplanationState:
    """The cached overlay, or queue tasks.explain_scan on 'inference' unless one is pending already.

    Raises when the broker cannot be reached (the pending marker is removed, so a retry sends).
    """
    path = explanation_path(settings, model_version_id, scan_id, model)
    if path.is_file():
        return ExplanationState("ready", path, heat_share=_heat_share(path))
    error = _sibling(path, ".error")
    try:
        reason = error.read_text(encoding="utf-8")
    except FileNotFoundError:
        reason = None
    if reason is not None:
        error.unlink(missing_ok=True)  # reported once; the next request tries again
        return ExplanationState("failed", path, reason)
    marker = _sibling(path, ".pending")
    if _claim_pending(marker):
        from tasks.dispatch import celery_for

        try:
            celery_for(settings).send_task(TASK_NAME, args=[int(scan_id), int(model_version_id), model],
                                           queue="inference")
        except Exception:
            marker.unlink(missing_ok=True)
            raise
        logger.info("queued the %s explanation of scan %s (model version %s)", model, scan_id,
                    model_version_id)
    return ExplanationState("queued", path)


def _explainer(version: ModelVersion, settings: Settings) -> Any:
    """The Explainer of a model version: the classify engine's bundle for the active version (loaded
    once per process anyway), else the bundle loaded here, so an old version never evicts the engine."""
    from models.explain import Explainer

    key = (version.id, version.bundle_path)
    engine_bundle = (runtime.engine_for(version.id, version.bundle_path, settings).bundle
                     if version.status == "active" else None)
    with _lock:
        cached = _explainers.get(key)
        # An explainer kept from before the engine was reloaded would hold a second copy of
        # the networks: only one whose bundle is the engine's own (or an inactive one) is reused.
        if cached is not None and (engine_bundle is None or cached.bundle is engine_bundle):
            return cached
    if engine_bundle is not None:
        bundle = engine_bundle
    else:
        from models.bundle import load_bundle

        runtime.configure_devices()
        bundle = load_bundle(version.bundle_path)
    explainer = Explainer(bundle)
    with _lock:
        _explainers.clear()
        _explainers[key] = explainer
    return explainer


def _image(settings: Settings, scan: Scan) -> Any:
    """The scan's frame at full size, as the decoder gives it to the models before resizing."""
    from training.decode import DecodeError, decode_bytes

    try:
        data = blob_path(settings.uploads_dir, scan.sha256).read_bytes()
    except (FileNotFoundError, ValueError):
        raise ExplanationError(f"the stored file of scan {scan.id} is missing") from None
    try:
        frames = decode_bytes(data, scan.path, max_pixels=settings.max_image_pixels)
    except DecodeError as exc:
        raise ExplanationError(f"scan {scan.id} cannot be decoded: {exc}") from None
    if scan.frame >= len(frames):
        raise ExplanationError(f"frame {scan.frame} not found: the file has {len(frames)} frame(s)")
    return frames[scan.frame].image


def _heat_share(path: Path) -> float | None:
    """The recorded heat share of a cached overlay (None for overlays cached before it was kept)."""
    try:
        return float(json.loads(_sibling(path, ".json").read_text(encoding="utf-8"))["heat_share"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def heat_share(heatmap: Any) -> float:
    """Share of a Grad-CAM map (normalised to its peak) at or above COLD_BELOW: 0.0 when no region
    raised the score at all (an all-zero map, whose overlay is the plain scan)."""
    import numpy as np

    from models.explain import COLD_BELOW  # the overlay leaves the rest uncoloured

    heat = np.asarray(heatmap, dtype=np.float32)
    return round(float(np.mean(heat >= COLD_BELOW)), 4) if heat.size else 0.0


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def explain_and_cache(session_factory: sessionmaker[Session], settings: Settings, scan_id: int,
                      model_version_id: int, model: str) -> Path:
    """Compute the overlay PNG of a scan by one model of a version and cache it; return its path.

    A PNG already cached is kept (a duplicate delivery costs nothing). Raises ExplanationError.
    """
    from models.explain import overlay_png

    path = explanation_path(settings, model_version_id, scan_id, model)
    if path.is_file():
        return path
    with session_factory() as session:
        scan = session.get(Scan, scan_id)
        version = session.get(ModelVersion, model_version_id)
        if scan is None:
            raise ExplanationError(f"scan {scan_id} does not exist")
        if version is None:
            raise ExplanationError(f"model version {model_version_id} does not exist")
        image = _image(settings, scan)
        try:
            explainer = _explainer(version, settings)
        except Exception as exc:
            raise ExplanationError(f"model version {version.id} cannot be loaded: {exc}") from exc
    if model not in explainer.model_names:
        raise ExplanationError(f"model version {model_version_id} has no {model} model")
    started = time.perf_counter()
    explanation = explainer.explain(image, model)
    # The sidecar first: the PNG's presence is what says "ready".
    _write_atomic(_sibling(path, ".json"), json.dumps({"heat_share": heat_share(explanation.heatmap)}).encode())
    _write_atomic(path, overlay_png(image, explanation))
    logger.info("explained scan %s with %s of version %s (%s, %s %.2f) in %.2f s", scan_id, model,
                model_version_id, explanation.layer, explanation.label, explanation.confidence,
                time.perf_counter() - started)
    return path


@shared_task(name=TASK_NAME)
def explain_scan(scan_id: int, model_version_id: int, model: str) -> dict[str, str]:
    """Celery task: cache the Grad-CAM overlay of one scan by one model; a failure leaves its reason."""
    conf = runtime.settings()
    path = explanation_path(conf, model_version_id, scan_id, model)
    try:
        explain_and_cache(runtime.session_factory(), conf, scan_id, model_version_id, model)
        return {"status": "ready"}
    except Exception as exc:
        reason = str(exc) if isinstance(exc, ExplanationError) else f"{type(exc).__name__}: {exc}"
        logger.warning("explaining scan %s with %s of version %s failed: %s", scan_id, model,
                       model_version_id, reason, exc_info=not isinstance(exc, ExplanationError))
        _write_atomic(_sibling(path, ".error"), reason.encode("utf-8"))
        return {"status": "failed", "detail": reason}
    finally:
        _sibling(path, ".pending").unlink(missing_ok=True)
