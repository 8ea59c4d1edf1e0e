"""The sweeper (beat, every SCAN_LEASE_S / 2): no queued scan or training run is left stranded.

The database, not the broker, says what is left to do. Each sweep:

1. fails the queued scans whose lease ran out after their last allowed attempt, and
   re-sends the other scans whose lease ran out (their worker died as a whole), one
   scan per task, so a scan that kills its worker cannot take others down with it;
2. sends the scans that were never handed to the broker (the sender died, or the
   broker was down, or no model version was active);
3. re-sends scans whose message was lost from the broker (e.g. a Redis restarted
   without persistence): once more scans have waited longer than SCAN_LEASE_S than
   the inference queue could still hold, the oldest are sent again;
4. fails running training runs whose lease ran out, and sends queued runs that were
   never sent or whose message was lost.

Every send can meet a message that is still on its way; that duplicate finds its
scans leased or classified and does nothing.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Sequence

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from db.base import utcnow
from db.models import Scan, TrainingRun
from tasks.broker import queue_depths
from tasks.classify import gave_up_reason
from tasks.dispatch import dispatch_waiting_jobs, enqueue_training, send_scans, task_size
from tasks.jobs import refresh_job
from tasks.versions import active_version

logger = logging.getLogger(__name__)
_BATCH_ROWS = 5000  # scans handled per sweep step, so one sweep stays short


@dataclass
class SweepReport:
    """What one sweep did."""

    failed_dead: int = 0
    resent_dead: int = 0
    jobs_dispatched: int = 0
    resent_lost: int = 0
    runs_failed: int = 0
    runs_sent: int = 0

    def __bool__(self) -> bool:
        return any(vars(self).values())


def sweep(session_factory: sessionmaker[Session], settings: Settings) -> SweepReport:
    """One pass over everything that could be stranded; see the module docstring."""
    report = SweepReport()
    report.failed_dead, report.resent_dead = resend_dead_leases(session_factory, settings)
    report.jobs_dispatched = dispatch_waiting_jobs(session_factory, settings)
    try:
        depths = queue_depths(settings)
    except Exception as exc:  # broker down: nothing can be sent now anyway
        logger.warning("sweeper: the broker does not answer (%s: %s)", type(exc).__name__, exc)
        depths = None
    if depths is not None:
        report.resent_lost = resend_lost_scans(session_factory, settings, depths["inference"])
    report.runs_failed = fail_dead_training_runs(session_factory, settings)
    if depths is not None:
        report.runs_sent = send_stranded_training_runs(session_factory, settings, depths["training"])
    if report:
        logger.info("sweeper: %s", report)
    return report


def resend_dead_leases(session_factory: sessionmaker[Session], settings: Settings) -> tuple[int, int]:
    """Queued scans whose lease ran out: fail those out of attempts, re-send the rest one per task.

    Returns (failed, re-sent).
    """
    now, limit = utcnow(), settings.max_scan_attempts
    with session_factory() as session:
        version = active_version(session)
        scans = list(session.execute(
            select(Scan).where(Scan.status == "queued", Scan.lease_until < now).order_by(Scan.id)
            .limit(_BATCH_ROWS).with_for_update(skip_locked=True, key_share=True)).scalars())
        if not scans:
            return 0, 0
        failed = [s for s in scans if s.attempts >= limit]
        for scan in failed:
            scan.status, scan.error = "failed", gave_up_reason(limit)
            scan.lease_owner = scan.lease_until = None
        resend = [s for s in scans if s.attempts < limit] if version is not None else []
        for scan in resend:
            scan.lease_owner, scan.lease_until, scan.dispatched_at = None, None, now
        for job_id in sorted({s.job_id for s in failed}):
            refresh_job(session, job_id)
        ids, jobs = [s.id for s in resend], sorted({s.job_id for s in resend})
        version_id = version.id if version is not None else None
        session.commit()
    if failed:
        logger.warning("sweeper: %d scan(s) failed: their worker died on each of %d attempts", len(failed), limit)
    if ids:
        logger.warning("sweeper: %d scan(s) of job(s) %s were held by a worker that stopped; re-sent one per task",
                       len(ids), jobs)
        # Marked as sent above: if this send fails, they count as lost and step 3 sends them.
        send_scans(settings, ids, version_id, per_task=1, jobs=jobs)
    return len(failed), len(ids)


def resend_lost_scans(session_factory: sessionmaker[Session], settings: Settings, queue_depth: int) -> int:
    """Re-send the oldest waiting scans beyond what the inference queue could still hold.

    A scan is waiting when it was sent more than SCAN_LEASE_S ago and no worker has
    leased it since. Each message holds at most one task's worth of scans, so with
    `queue_depth` messages left, anything beyond queue_depth x task size cannot be in
    the queue: its message was lost. Returns how many scans were re-sent.
    """
    now = utcnow()
    capacity = queue_depth * task_size(settings)
    waited = now - timedelta(seconds=settings.scan_lease_s)
    with session_factory() as session:
        version = active_version(session)
        if version is None:
            return 0
        waiting = (Scan.status == "queued", Scan.lease_until.is_(None), Scan.dispatched_at < waited)
        count = session.scalar(select(func.count()).select_from(Scan).where(*waiting)) or 0
        lost = min(max(0, count - capacity), _BATCH_ROWS)
        if lost == 0:
            return 0
        scans = list(session.execute(
            select(Scan).where(*waiting).order_by(Scan.dispatched_at, Scan.id).limit(lost)
            .with_for_update(skip_locked=True, key_share=True)).scalars())
        for scan in scans:
            scan.dispatched_at = now
        ids, jobs, version_id = [s.id for s in scans], sorted({s.job_id for s in scans}), version.id
        session.commit()
    if ids:
        logger.warning("sweeper: %d scan(s) of job(s) %s waited over %d s and are not in the broker "
                       "(%d message(s) left); re-sent", len(ids), jobs, settings.scan_lease_s, queue_depth)
        send_scans(settings, ids, version_id, jobs=jobs)
    return len(ids)


def fail_dead_training_runs(session_factory: sessionmaker[Session], settings: Settings) -> int:
    """Mark failed the running training runs whose worker stopped renewing their lease."""
    now = utcnow()
    silent_since = now - timedelta(seconds=settings.training_lease_s)
    with session_factory() as session:
        runs = list(session.execute(select(TrainingRun).where(
            TrainingRun.status == "running",
            or_(TrainingRun.lease_until < now,
                and_(TrainingRun.lease_until.is_(None), TrainingRun.started < silent_since)))
            .with_for_update(skip_locked=True)).scalars())
        for run in runs:
            run.status, run.finished = "failed", now
            run.error = (f"interrupted: the training worker stopped (no sign of life for "
                         f"{settings.training_lease_s} s); the active model version is unchanged. "
                         "Start a new run to try again.")
            run.lease_until = None
        session.commit()
    for run in runs:
        logger.warning("sweeper: training run %s failed: its worker stopped", run.id)
    return len(runs)


def send_stranded_training_runs(session_factory: sessionmaker[Session], settings: Settings,
                                queue_depth: int) -> int:
    """Send queued runs never sent, and, when nothing trains and the training queue is empty,
    queued runs sent long ago (their message was lost). Returns how many were sent."""
    now = utcnow()
    waited = now - timedelta(seconds=settings.scan_lease_s)
    with session_factory() as session:
        unsent = list(session.execute(select(TrainingRun.id).where(
            TrainingRun.status == "queued", TrainingRun.dispatched_at.is_(None),
            TrainingRun.created < waited).order_by(TrainingRun.id)).scalars())
        lost: Sequence[int] = []
        busy = session.scalar(select(TrainingRun.id).where(
            TrainingRun.status == "running", TrainingRun.lease_until >= now).limit(1))
        if queue_depth == 0 and busy is None:
            lost = list(session.execute(select(TrainingRun.id).where(
                TrainingRun.status == "queued", TrainingRun.dispatched_at < waited)
                .order_by(TrainingRun.id)).scalars())
    for run_id in [*unsent, *lost]:
        logger.warning("sweeper: training run %s is queued but not in the broker; sending it", run_id)
        enqueue_training(run_id, settings, session_factory)
    return len(unsent) + len(lost)


def clear_scan_leases(session: Session) -> None:
    """Forget every lease and send mark of queued scans (only when no worker runs: make run's restart)."""
    session.execute(update(Scan).where(Scan.status == "queued")
                    .values(lease_owner=None, lease_until=None, dispatched_at=None)
                    .execution_options(synchronize_session=False))
