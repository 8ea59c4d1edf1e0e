"""tasks.train_model / tasks.scheduled_retrain: gather the pool, train a bundle, register it, gate, promote,
dispatch."""
from __future__ import annotations

import dataclasses
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from celery import shared_task
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from db.base import utcnow
from db.models import ModelVersion, TrainingRun
from tasks import runtime
from tasks.dispatch import dispatch_waiting_jobs
from tasks.gate import Decision, evaluate_and_decide
from tasks.leases import LeaseKeeper, lease_expiry, renew_run_lease
from tasks.reviews import reviewed_items
from tasks.runtime import resolve_precision
from tasks.versions import activate_version, active_version, register_bundle

logger = logging.getLogger(__name__)

# TrainOptions fields a training run's params may set; data and output come from the settings.
# Besides them: warm_start (true: continue the active version's custom CNN for a few epochs at a
# low rate instead of training it anew) and profile ("full", or "quick": training.recipe.PROFILES).
ALLOWED_PARAMS = ("models", "epochs", "image_size", "batch_size", "backbone_weights", "seed", "views",
                  "cnn_variant", "cnn_epochs", "val_fraction", "warm_start", "profile", "warm_start_replay",
                  "warm_start_freeze")
_LOG_LINES = 300
# Share of a run's progress bar for training; the gate's scoring takes the rest.
_TRAINING_SHARE = 0.9
_PROGRESS_EVERY_S = 2.0


class ProgressWriter:
    """The train_bundle progress callback: stage, fraction and log lines onto the TrainingRun row."""

    def __init__(self, session_factory: sessionmaker[Session], run_id: int) -> None:
        """Write progress of run `run_id` with short transactions of its own."""
        self.session_factory, self.run_id = session_factory, run_id
        self.last_write, self.last_stage = 0.0, None
        self.pending: list[str] = []

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        """Record one progress report; written at most every couple of seconds unless the stage changes."""
        if message:
            self.pending.append(f"{datetime.now(timezone.utc):%H:%M:%S} [{stage}] {message}")
        now = time.monotonic()
        if stage == self.last_stage and now - self.last_write < _PROGRESS_EVERY_S and fraction < 1.0:
            return
        self.write(stage=stage, progress=float(fraction))
        self.last_write, self.last_stage = now, stage

    def write(self, **fields: Any) -> None:
        """Flush pending log lines plus `fields` to the row."""
        with self.session_factory() as session:
            run = session.get(TrainingRun, self.run_id)
            if run is None:
                return
            for name, value in fields.items():
                setattr(run, name, value)
            if self.pending:
                lines = (run.log.splitlines() if run.log else []) + self.pending
                run.log = "\n".join(lines[-_LOG_LINES:])
                self.pending = []
            session.commit()


def model_names(value: Any) -> tuple[str, ...]:
    """A run's `models` param as a tuple: a comma-separated string ("resnet50,svm") or a list."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(str(item).strip() for item in items if str(item).strip())
    if not names:
        raise ValueError("the training parameter 'models' names no model")
    return names


def training_options(run: TrainingRun, settings: Settings, out_dir: Path,
                     active: ModelVersion | None = None) -> Any:
    """TrainOptions for a run: its params (whitelisted) over the profile's and the recipe's defaults.

    With `warm_start` the custom CNN continues from `active` (the active version): unless the
    params say otherwise the run takes that bundle's backbone weights, image size and CNN variant. Features are
    kept in the settings' feature cache across runs.
    """
    from models.backbones import check_weights_location
    from training.recipe import PROFILE_NOTES, PROFILES, TrainOptions

    if settings.training_data_dir is None:
        raise RuntimeError("TRAINING_DATA_DIR is not set: point it at a labelled folder "
                           "(one subfolder per class) or a .zip of one")
    if not Path(settings.training_data_dir).exists():
        raise RuntimeError(f"TRAINING_DATA_DIR {settings.training_data_dir} does not exist")
    params = dict(run.params or {})
    unknown = sorted(set(params) - set(ALLOWED_PARAMS))
    if unknown:
        raise ValueError(f"unknown training parameter(s): {', '.join(unknown)}")
    if params.get("warm_start") is True and active is not None:
        # A warm start continues the active version: its backbone weights too (as its image size
        # and CNN variant below), so its heads and the feature cache carry over.
        requested = ((active.manifest or {}).get("backbone_weights") or {}).get("requested")
        if requested:
            params.setdefault("backbone_weights", str(requested))
    params.setdefault("backbone_weights", settings.backbone_weights)
    # Whatever the weights came from (the params, the active version, the setting), the worker
    # reads only files under the allowed roots.
    check_weights_location(str(params["backbone_weights"]), settings.backbone_weights)
    if "models" in params:
        params["models"] = model_names(params["models"])
    check_param_values(params)
    warm = params.pop("warm_start", False)
    profile = params.pop("profile", "full")
    warm_from = active.bundle_path if warm and active is not None else None
    if warm_from is not None:
        # Continue at the size and variant the active CNN was trained at.
        params.setdefault("image_size", int(active.manifest["image_size"]))
        params.setdefault("cnn_variant", active.manifest.get("custom_cnn_variant") or "improved")
    for name, value in PROFILES[profile].items():
        params.setdefault(name, value)
    names = {f.name for f in dataclasses.fields(TrainOptions)}
    return TrainOptions(data=settings.training_data_dir, out=out_dir,
                        feature_cache=settings.feature_cache_folder,
                        feature_cache_max_mb=settings.feature_cache_max_mb,
                        review_target_accuracy=settings.review_target_accuracy,
                        warm_start=warm_from, profile=profile, notes=PROFILE_NOTES.get(profile, ""),
                        **{k: v for k, v in params.items() if k in names})


def check_param_values(params: dict[str, Any]) -> None:
    """Raise ValueError for a warm_start that is not true/false, a warm_start_replay or
    warm_start_freeze that is not a whole number, or a profile that is not known."""
    from training.recipe import PROFILES

    warm = params.get("warm_start", False)
    if not isinstance(warm, bool):
        raise ValueError(f"the training parameter 'warm_start' is true or false, got {warm!r}")
    for name, unit in (("warm_start_replay", "scans"), ("warm_start_freeze", "convolutions")):
        value = params.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"the training parameter '{name}' is a whole number of {unit}, got {value!r}")
    profile = params.get("profile", "full")
    if profile not in PROFILES:
        raise ValueError(f"the training parameter 'profile' is one of {', '.join(PROFILES)}, got {profile!r}")


def warm_start_problem(options: Any, labels: set[str]) -> str | None:
    """Why the active version's custom CNN cannot be continued in this run (None: it can)."""
    from training.recipe import TrainingError, check_warm_start

    try:
        manifest = check_warm_start(options)
    except TrainingError as exc:
        return str(exc)
    if sorted(labels) != sorted(str(c) for c in manifest["classes"]):
        return f"its classes {manifest['classes']} are not the pool's {sorted(labels)}"
    return None


def run_training(session_factory: sessionmaker[Session], settings: Settings, run_id: int) -> int | None:
    """Train, register, gate and maybe activate for one TrainingRun; return the new version id.

    The run is leased to this worker (renewed every TRAINING_LEASE_S / 4 s): if the worker
    dies, the sweeper marks the run failed once the lease runs out.
    """
    with session_factory() as session:
        run = session.execute(select(TrainingRun).where(TrainingRun.id == run_id).with_for_update()
                              ).scalar_one_or_none()
        if run is None:
            raise LookupError(f"training run {run_id} does not exist")
        if run.status in ("succeeded", "failed"):
            logger.info("training run %s already %s; nothing to do", run_id, run.status)
            return run.model_version_id
        lease = run.lease_until
        if run.status == "running" and lease is not None and _aware(lease) >= utcnow():
            # A duplicate delivery while a live worker trains it (its lease is renewed).
            logger.info("training run %s is being trained by another worker; nothing to do", run_id)
            return None
        # A run found 'running' with its lease run out was interrupted (its worker died and
        # the broker delivered it again before the sweeper failed it): it starts again.
        run.status, run.started, run.error, run.stage, run.progress = "running", utcnow(), "", "start", 0.0
        run.lease_until = lease_expiry(settings.training_lease_s)
        session.commit()
    keeper = LeaseKeeper(session_factory, settings.training_lease_s,
                         lambda session: renew_run_lease(session, run_id, settings.training_lease_s),
                         f"training run {run_id}")
    with keeper:
        return _train_and_register(session_factory, settings, run_id)


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _scaled(progress: ProgressWriter, start: float, width: float) -> Callable[[str, float, str], None]:
    """A progress callback mapping a stage's 0..1 onto start..start+width of the run."""
    return lambda stage, fraction, message: progress(stage, start + width * fraction, message)


def gather_pool(session_factory: sessionmaker[Session], settings: Settings, data: str | Path) -> Any:
    """The run's pool: the labelled folder plus every scan with a current review, by content."""
    from training.datasets import list_labelled
    from training.pool import build_pool

    with session_factory() as session:
        reviewed, missing = reviewed_items(session, settings.uploads_dir)
    pool = build_pool(list_labelled(data), reviewed)
    pool.summary["reviewed_missing"] = missing
    return pool


def _train_and_register(session_factory: sessionmaker[Session], settings: Settings, run_id: int) -> int | None:
    """The body of a run once leased: gather the pool, train, register, gate, maybe activate."""
    from training.recipe import train_bundle

    progress = ProgressWriter(session_factory, run_id)
    promote = False
    try:
        with session_factory() as session:
            run = session.get(TrainingRun, run_id)
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            out_dir = settings.bundles_dir / f"{stamp}-run{run_id}"
            active = active_version(session)
            options = training_options(run, settings, out_dir, active)
            warm_asked = bool((run.params or {}).get("warm_start"))
            active_id = active.id if active is not None else None
        pool = gather_pool(session_factory, settings, options.data)
        counts = pool.summary
        progress.pending.append(
            f"{datetime.now(timezone.utc):%H:%M:%S} [pool] {counts['folder_files']} folder files, "
            f"{counts['reviewed_scans']} reviewed scans ({counts['overrides']} overriding a folder label); "
            f"{counts['evaluation']} held out for evaluation, {counts['train_pool']} to train on")
        if options.notes:
            progress.pending.append(f"{datetime.now(timezone.utc):%H:%M:%S} [profile] {options.profile}: "
                                    f"{options.notes}")
        if warm_asked:
            progress.pending.append(f"{datetime.now(timezone.utc):%H:%M:%S} [warm start] "
                                    + _warm_start_line(options, pool, active_id))
        progress.write(data_summary=dict(counts))
        settings.bundles_dir.mkdir(parents=True, exist_ok=True)
        progress("start", 0.0, f"training into {out_dir}")
        train_bundle(options, _scaled(progress, 0.0, _TRAINING_SHARE), items=pool.train,
                     evaluation_held_out=True, held_out=pool.evaluation)
        with session_factory() as session:
            version = register_bundle(session, out_dir, training_run_id=run_id)
            active = active_version(session)
            candidate = (version.id, version.bundle_path)
            current = (active.id, active.bundle_path) if active is not None and active.id != version.id else None
            session.commit()
        decision = evaluate_and_decide(
            candidate, current, pool.evaluation, settings.promotion_tolerance,
            precision=resolve_precision(settings.inference_precision), batch_size=settings.inference_batch_size,
            rule=str(counts["evaluation_rule"]), progress=_scaled(progress, _TRAINING_SHARE, 1 - _TRAINING_SHARE))
        with session_factory() as session:
            version_id, promote = _record_decision(session, run_id, candidate[0], current, decision)
            run = session.get(TrainingRun, run_id)
            run.status, run.stage, run.progress, run.finished = "succeeded", "done", 1.0, utcnow()
            run.lease_until = None
            progress.pending.append(f"{datetime.now(timezone.utc):%H:%M:%S} [gate] {decision.reason}")
            run.log = "\n".join(((run.log.splitlines() if run.log else []) + progress.pending)[-_LOG_LINES:])
            progress.pending = []
            session.commit()
        logger.info("training run %s → model version %s (%s)", run_id, version_id, decision.reason)
    except Exception as exc:
        logger.exception("training run %s failed", run_id)
        progress.write(status="failed", error=f"{type(exc).__name__}: {exc}", finished=utcnow(),
                       lease_until=None)
        return None
    if promote:
        dispatch_waiting_jobs(session_factory, settings)
    return version_id


def _warm_start_line(options: Any, pool: Any, active_id: int | None) -> str:
    """Settle a requested warm start (cleared when it cannot work) and say what happens."""
    if options.warm_start is None:
        return "no active version to continue from: the custom CNN trains from scratch"
    problem = warm_start_problem(options, {item.label for item in pool.train})
    if problem is not None:
        options.warm_start = None
        return f"version {active_id}'s custom CNN cannot be continued ({problem}): it trains from scratch"
    recipe, frozen = options.warm_recipe(), options.frozen_convolutions()
    return (f"continuing version {active_id}'s custom CNN for {recipe.epochs} epochs at a peak rate of "
            f"{recipe.learning_rate:g}" + (f" (its first {frozen} convolutions frozen)" if frozen else "")
            + ", and its ResNet50/VGG16 heads where the backbone is the same; the gate still decides")


def _record_decision(session: Session, run_id: int, candidate_id: int, compared: tuple[int, Any] | None,
                     decision: Decision) -> tuple[int, bool]:
    """Store the decision on the run and each version's evaluation figures; activate when promoted.

    A version activated by someone else while the gate ran makes the comparison stale: the
    candidate then stays a candidate.
    """
    version = session.get(ModelVersion, candidate_id)
    compared_id = compared[0] if compared else None
    scored_at = utcnow().isoformat(timespec="seconds")
    for figures, version_id in ((decision.candidate, candidate_id), (decision.active, compared_id)):
        target = session.get(ModelVersion, version_id) if version_id is not None else None
        if target is not None and figures and "error" not in figures:
            target.evaluation = {**figures, "run": run_id, "at": scored_at, "rule": decision.rule}
    now_active = active_version(session)
    now_active_id = now_active.id if now_active is not None else None
    if decision.promoted and now_active_id != compared_id:
        decision.promoted = False
        decision.reason = (f"not promoted: version {now_active_id} was activated while the gate compared "
                           f"with version {compared_id}; the gate said: {decision.reason}")
    if decision.promoted:
        activate_version(session, version)
    session.get(TrainingRun, run_id).decision = decision.as_json()
    return version.id, decision.promoted


def create_scheduled_run(session_factory: sessionmaker[Session], settings: Settings) -> int | None:
    """Create a TrainingRun(trigger='schedule') unless one is queued/running or there is no data.

    A running run whose worker died (lease run out) is failed first, so it cannot block
    scheduled retraining for ever.
    """
    from tasks.sweeper import fail_dead_training_runs

    if settings.training_data_dir is None or not Path(settings.training_data_dir).exists():
        logger.info("scheduled retraining skipped: TRAINING_DATA_DIR is not set or missing")
        return None
    fail_dead_training_runs(session_factory, settings)
    with session_factory() as session:
        busy = session.execute(select(TrainingRun.id).where(
            TrainingRun.status.in_(("queued", "running"))).limit(1)).scalar()
        if busy is not None:
            logger.info("scheduled retraining skipped: training run %s is already queued or running", busy)
            return None
        # Marked as sent: this task trains it itself, right away.
        params = {"warm_start": True} if settings.retrain_warm_start else {}
        run = TrainingRun(trigger="schedule", status="queued", dispatched_at=utcnow(), params=params)
        session.add(run)
        session.commit()
        return run.id


@shared_task(name="tasks.train_model")
def train_model(run_id: int) -> int | None:
    """Celery task: run one queued TrainingRun end to end."""
    return run_training(runtime.session_factory(), runtime.settings(), run_id)


@shared_task(name="tasks.scheduled_retrain")
def scheduled_retrain() -> int | None:
    """Celery beat task: queue and run a retraining on the current training data."""
    factory, settings = runtime.session_factory(), runtime.settings()
    run_id = create_scheduled_run(factory, settings)
    if run_id is None:
        return None
    # Already on the training queue: run it here rather than queue a second message.
    run_training(factory, settings, run_id)
    return run_id
