"""What the web calls after committing a job: reuse stored predictions, then enqueue the rest."""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Iterator, Sequence

from celery import Celery
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from db.base import utcnow
from db.models import Job, Prediction, Scan, TrainingRun
from tasks.jobs import refresh_job
from tasks.store import insert_predictions
from tasks.versions import active_version

logger = logging.getLogger(__name__)

WAITING_FOR_MODEL = ("waiting for a trained model: no active model version yet. Register one with "
                     "`flask --app web register-model BUNDLE_DIR --activate` or start a training run; "
                     "this job starts by itself once a version is active.")
BROKER_UNREACHABLE = ("could not reach the broker to queue this job's scans; will retry "
                      "automatically (every minute) until it answers.")
_IN_CHUNK = 500  # keeps IN (...) lists well under database parameter limits
_senders: dict[tuple[str, str], Celery] = {}


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def celery_for(settings: Settings) -> Celery:
    """The Celery app to send with: the current one if it is ours for this broker, else a cached one."""
    from celery import current_app

    from workers.app import APP_NAME, create_celery

    key = (settings.celery_broker_url, settings.broker_key_prefix)
    app = current_app._get_current_object()
    own = app.conf.get("mri_settings") if app.main == APP_NAME else None
    if own is not None and (own.celery_broker_url, own.broker_key_prefix) == key:
        return app
    if key not in _senders:
        _senders[key] = create_celery(settings)
    return _senders[key]


def reuse_predictions(session: Session, scans: Sequence[Scan], model_version_id: int) -> list[Scan]:
    """Copy stored predictions of identical content (sha256 + frame) onto `scans`; return those reused."""
    wanted = {(s.sha256, s.frame) for s in scans}
    donors: dict[tuple[str, int], int] = {}
    for shas in _chunks(sorted({sha for sha, _ in wanted}), _IN_CHUNK):
        # A donor must carry the ensemble row, i.e. a complete set written by a worker.
        found = session.execute(
            select(Scan.id, Scan.sha256, Scan.frame).join(Prediction, Prediction.scan_id == Scan.id)
            .where(Scan.sha256.in_(shas), Scan.status == "classified",
                   Prediction.model_version_id == model_version_id, Prediction.model_name == "ensemble")
            .order_by(Scan.id)).all()
        for scan_id, sha, frame in found:
            donors.setdefault((sha, frame), scan_id)
    donors = {key: scan_id for key, scan_id in donors.items() if key in wanted}
    if not donors:
        return []
    stored: dict[int, list[Prediction]] = {}
    for ids in _chunks(sorted(set(donors.values())), _IN_CHUNK):
        for pred in session.execute(select(Prediction).where(
                Prediction.scan_id.in_(ids), Prediction.model_version_id == model_version_id)).scalars():
            stored.setdefault(pred.scan_id, []).append(pred)
    reused, rows, now = [], [], utcnow()
    for scan in scans:
        donor = donors.get((scan.sha256, scan.frame))
        if donor is None or donor == scan.id:
            continue
        rows.extend(dict(scan_id=scan.id, model_version_id=model_version_id, model_name=p.model_name,
                         label=p.label, confidence=p.confidence, probabilities=p.probabilities,
                         agreement=p.agreement, needs_review=p.needs_review, latency_ms=None)
                    for p in stored[donor])
        scan.status, scan.reused, scan.error = "classified", True, ""
        scan.model_version_id, scan.classified_at = model_version_id, now
        reused.append(scan)
    insert_predictions(session, rows)
    return reused


def task_size(settings: Settings) -> int:
    """Scans per classify task: INFERENCE_BATCH_SIZE x INFERENCE_BATCHES_PER_TASK."""
    return settings.inference_batch_size * settings.inference_batches_per_task


def send_scans(settings: Settings, scan_ids: Sequence[int], model_version_id: int,
               per_task: int | None = None, jobs: Sequence[int] = ()) -> int:
    """Send classify_batch tasks for these scans, `per_task` scans each (default a task's worth).

    `jobs` only labels the tasks for monitoring (Flower, `celery events`); workers re-read
    every scan from the database. Returns how many tasks were sent.
    """
    app = celery_for(settings)
    sent = 0
    for chunk in _chunks(list(scan_ids), per_task or task_size(settings)):
        app.send_task("tasks.classify_batch", args=[list(chunk), model_version_id],
                      kwargs={"jobs": sorted(set(jobs))}, queue="inference")
        sent += 1
    return sent


def mark_dispatched(session_factory: sessionmaker[Session], scan_ids: Sequence[int]) -> None:
    """Record that these scans are in the broker now (the sweeper sends scans never marked)."""
    now = utcnow()
    with session_factory() as session:
        for chunk in _chunks(list(scan_ids), _IN_CHUNK):
            session.execute(update(Scan).where(Scan.id.in_(list(chunk)), Scan.status == "queued")
                            .values(dispatched_at=now).execution_options(synchronize_session=False))
        session.commit()


def dispatch_job(session_factory: sessionmaker[Session], job_id: int, settings: Settings,
                 scan_ids: Sequence[int] | None = None) -> None:
    """Reuse what is stored, commit, then enqueue classify_batch tasks for the job's unsent scans.

    Only queued scans never handed to the broker (`dispatched_at` empty) are sent, and
    `scan_ids` limits that to the scans just added (multi-request uploads). After the send
    they are marked; if this process dies in between, the sweeper sends them (a duplicate
    delivery is a no-op). When sending fails the job is flagged (BROKER_UNREACHABLE) and
    the error is raised.
    """
    with session_factory() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise LookupError(f"job {job_id} does not exist")
        version = active_version(session)
        if version is None:
            job.status_detail = WAITING_FOR_MODEL
            refresh_job(session, job_id)
            session.commit()
            logger.info("job %s waits: no active model version", job_id)
            return
        query = (select(Scan).where(Scan.job_id == job_id, Scan.status == "queued",
                                    Scan.dispatched_at.is_(None), Scan.lease_until.is_(None))
                 .order_by(Scan.id))
        scans = list(session.execute(query).scalars())
        # A flagged job (waiting for a model or the broker) never had its earlier scans
        # sent, so all of its unsent scans go now, not only the ones just added.
        if scan_ids is not None and not job.status_detail:
            keep = set(scan_ids)
            scans = [s for s in scans if s.id in keep]
        reused = reuse_predictions(session, scans, version.id)
        job.status_detail = ""
        refresh_job(session, job_id)
        version_id = version.id
        todo = [s.id for s in scans if s.status == "queued"]
        session.commit()
    try:
        send_scans(settings, todo, version_id, jobs=[job_id])
    except Exception:
        # The job is committed but its scans are not in the broker: flag it so the
        # sweeper sends them once the broker answers again.
        _flag_not_sent(session_factory, job_id)
        raise
    mark_dispatched(session_factory, todo)
    logger.info("job %s: %d scans reused, %d enqueued for model version %s",
                job_id, len(reused), len(todo), version_id)


def _flag_not_sent(session_factory: sessionmaker[Session], job_id: int) -> None:
    """Mark a job whose scans could not be sent (status_detail = BROKER_UNREACHABLE)."""
    try:
        with session_factory() as session:
            job = session.get(Job, job_id)
            if job is not None and job.status != "done":
                job.status_detail = BROKER_UNREACHABLE
                session.commit()
        logger.warning("job %s: could not reach the broker; the sweeper will send it later", job_id)
    except Exception:
        logger.exception("job %s: could not reach the broker, nor record that in the database", job_id)


def dispatch_waiting_jobs(session_factory: sessionmaker[Session], settings: Settings) -> int:
    """Dispatch the jobs whose queued scans were never handed to the broker.

    That is every job flagged as waiting (no active model version, or the broker was
    down), and any job with scans unsent for longer than SCAN_LEASE_S (the web process
    died between committing them and sending them). Stops at the first send that fails
    (the broker is still down; the job stays flagged). Returns how many jobs were dispatched.
    """
    stale = utcnow() - timedelta(seconds=settings.scan_lease_s)
    with session_factory() as session:
        if active_version(session) is None:
            return 0  # they would only be told again that no model is active
        unsent = (select(Scan.job_id).where(Scan.status == "queued", Scan.dispatched_at.is_(None),
                                            Scan.lease_until.is_(None), Scan.created < stale))
        waiting = list(session.execute(
            select(Job.id).where(Job.status != "done",
                                 or_(Job.status_detail != "", Job.id.in_(unsent.distinct())))
            .order_by(Job.id)).scalars())
    dispatched = 0
    for job_id in waiting:
        try:
            dispatch_job(session_factory, job_id, settings)
        except Exception as exc:
            logger.warning("re-sending job %s failed (%s: %s); %d job(s) left for the next sweep",
                           job_id, type(exc).__name__, exc, len(waiting) - dispatched)
            break
        dispatched += 1
    return dispatched


def enqueue_training(run_id: int, settings: Settings | None = None,
                     session_factory: sessionmaker[Session] | None = None) -> None:
    """Queue tasks.train_model for a committed TrainingRun on the 'training' queue.

    With a session factory the run is marked as sent; a run never marked is sent by the
    sweeper once it has waited TRAINING_LEASE_S (the sender died before sending).
    """
    from celery import current_app

    app = celery_for(settings) if settings is not None else current_app
    app.send_task("tasks.train_model", args=[run_id], queue="training")
    if session_factory is not None:
        with session_factory() as session:
            session.execute(update(TrainingRun).where(TrainingRun.id == run_id)
                            .values(dispatched_at=utcnow()).execution_options(synchronize_session=False))
            session.commit()
