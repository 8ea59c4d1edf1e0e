"""Model versions (list, activate/roll back) and training runs (enqueue, progress)."""
from __future__ import annotations

import logging
from typing import Any

from flask import Response, jsonify, url_for
from sqlalchemy import select

from db.models import AuditEvent, ModelVersion, TrainingRun
from tasks.dispatch import dispatch_waiting_jobs, enqueue_training
from tasks.train import ALLOWED_PARAMS, check_param_values
from tasks.versions import activate_version
from web.api import bp
from web.auth import current_user
from web.errors import ApiError
from web.serialize import model_version_json, training_run_json
from web.state import app_state, db_session, get_or_404, use_celery
from web.validation import json_object, no_body, refuse_unknown
from web.weights import check_backbone_weights

logger = logging.getLogger(__name__)


@bp.get("/models")
def list_models() -> Response:
    """Every registered model version, newest first, with the active one named."""
    session = db_session()
    versions = session.execute(select(ModelVersion).order_by(ModelVersion.id.desc())).scalars().all()
    # The run that produced each version (its pool summary); the latest one if several did.
    runs = {run.model_version_id: run for run in session.execute(
        select(TrainingRun).where(TrainingRun.model_version_id.is_not(None)).order_by(TrainingRun.id)).scalars()}
    active = next((v.id for v in versions if v.status == "active"), None)
    return jsonify(models=[model_version_json(v, runs.get(v.id)) for v in versions], active=active)


@bp.post("/models/<int:version_id>/activate")
def activate_model(version_id: int) -> Response:
    """Make a version active (promote a candidate or roll back to a retired one), then start waiting jobs."""
    no_body()
    session = db_session()
    version = get_or_404(ModelVersion, version_id, "model version")
    previous = version.status
    activate_version(session, version, user_id=current_user().id)
    session.add(AuditEvent(user_id=current_user().id, action="model.activate", target=f"model:{version_id}",
                           detail={"previous_status": previous}))
    session.commit()
    state = app_state()
    use_celery()
    dispatched = dispatch_waiting_jobs(state.session_factory, state.settings)
    logger.info("model version %s activated by %s; %d waiting jobs dispatched",
                version_id, current_user().name, dispatched)
    run = session.execute(select(TrainingRun).where(TrainingRun.model_version_id == version_id)
                          .order_by(TrainingRun.id.desc())).scalars().first()
    return jsonify(model=model_version_json(version, run), dispatched_jobs=dispatched)


def _training_params(body: dict[str, Any]) -> dict[str, Any]:
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise ApiError(422, "bad_params", 'send JSON {"params": {name: value}} with plain values, or no body')
    # Refused here, at request time, rather than when a worker picks the run up and fails it.
    refuse_unknown(params, ALLOWED_PARAMS, "training parameter(s) in params")
    if not all(v is None or isinstance(v, (str, int, float, bool)) for v in params.values()):
        raise ApiError(422, "bad_params", 'send JSON {"params": {name: value}} with plain values, or no body')
    if params.get("backbone_weights") is not None:
        check_backbone_weights(str(params["backbone_weights"]), app_state().settings)
    try:
        check_param_values(params)
    except ValueError as error:
        # Refused here rather than by the worker, so a typo never costs a queued run.
        raise ApiError(422, "bad_params", str(error)) from None
    return params


@bp.post("/training-runs")
def create_training_run() -> tuple[Response, int, dict[str, str]]:
    """Queue a retraining on the 'training' queue: 202 {id, status_url}."""
    params = _training_params(json_object(("params",)))
    session = db_session()
    run = TrainingRun(trigger="manual", status="queued", params=params, user_id=current_user().id)
    session.add(run)
    session.flush()
    session.add(AuditEvent(user_id=current_user().id, action="training.enqueue", target=f"run:{run.id}",
                           detail={"params": run.params}))
    session.commit()
    use_celery()
    state = app_state()
    try:
        enqueue_training(run.id, state.settings, state.session_factory)
    except Exception as exc:  # committed and not marked as sent: the sweeper sends it later
        logger.warning("training run %s could not be sent now (%s: %s); the sweeper sends it once the "
                       "broker answers", run.id, type(exc).__name__, exc)
    url = url_for("api.training_run", run_id=run.id)
    return jsonify(id=run.id, status_url=url), 202, {"Location": url}


@bp.get("/training-runs/<int:run_id>")
def training_run(run_id: int) -> Response:
    """Progress, stage, log tail and resulting model version of a training run."""
    return jsonify(training_run_json(get_or_404(TrainingRun, run_id, "training run")))


@bp.get("/training-runs")
def list_training_runs() -> Response:
    """The latest training runs, newest first."""
    runs = db_session().execute(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(50)).scalars()
    return jsonify(training_runs=[training_run_json(r) for r in runs])
