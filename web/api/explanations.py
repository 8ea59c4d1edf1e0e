"""A scan's Grad-CAM overlay by one model: 200 PNG once computed, 202 while a worker computes it."""
from __future__ import annotations

import hashlib
import logging

from flask import Response, jsonify, request, url_for
from sqlalchemy import select

from db.models import Prediction, Scan
from models import MODEL_NAMES
from tasks.explain import request_explanation
from web.api import bp
from web.errors import ApiError
from web.state import db_session, get_or_404, settings
from web.validation import accepts_query

logger = logging.getLogger(__name__)
POLL_AFTER_S = 2  # Retry-After of a 202: a 224 px ResNet50 explanation takes about a second on a CPU


def _model_arg() -> str:
    model = request.args.get("model", "")
    if model not in MODEL_NAMES:
        raise ApiError(422, "unknown_model", f"model must be one of {', '.join(MODEL_NAMES)}, "
                                             f"got {model[:40]!r} (the ensemble has no heatmap of its own: "
                                             "ask for its members)")
    return model


@bp.get("/scans/<int:scan_id>/explanation")
@accepts_query("model")
def scan_explanation(scan_id: int) -> Response | tuple[Response, int, dict[str, str]]:
    """The scan with ?model='s Grad-CAM heatmap over it (PNG), by the version that classified it;
    202 {"status": "queued"} while a worker computes it (poll again)."""
    model = _model_arg()
    scan = get_or_404(Scan, scan_id, "scan")
    version_id = scan.model_version_id
    if scan.status != "classified" or version_id is None:
        raise ApiError(422, "not_classified", f"scan {scan_id} is {scan.status}, not classified: "
                                              "only a classified scan can be explained")
    predicted = db_session().scalar(select(Prediction.id).where(
        Prediction.scan_id == scan_id, Prediction.model_version_id == version_id,
        Prediction.model_name == model))
    if predicted is None:
        raise ApiError(422, "unknown_model", f"model version {version_id}, which classified scan {scan_id}, "
                                             f"has no {model} model")
    try:
        state = request_explanation(settings(), scan_id, version_id, model)
    except Exception as exc:  # noqa: BLE001 - kombu/redis raise many kinds; any means not queued
        logger.warning("could not queue the %s explanation of scan %s: %s: %s", model, scan_id,
                       type(exc).__name__, exc)
        raise ApiError(503, "broker_unavailable", "could not reach the broker to queue the explanation; "
                                                  "try again shortly") from None
    if state.status == "failed":
        raise ApiError(422, "explanation_failed", f"the {model} explanation of scan {scan_id} failed: "
                                                  f"{state.detail} (asking again tries again)")
    if state.status == "queued":
        url = url_for("api.scan_explanation", scan_id=scan_id, model=model)
        return (jsonify(status="queued", scan=scan_id, model=model, model_version=version_id),
                202, {"Location": url, "Retry-After": str(POLL_AFTER_S)})
    data = state.path.read_bytes()
    response = Response(data, mimetype="image/png")
    response.set_etag(hashlib.sha256(data).hexdigest()[:32])
    response.headers["Cache-Control"] = "private, no-cache"
    response.headers["Content-Disposition"] = f'inline; filename="scan-{scan_id}-{model}-gradcam.png"'
    if state.heat_share is not None:
        response.headers["X-Heatmap-Share"] = f"{state.heat_share:.4f}"
    return response.make_conditional(request)
