"""Job bookkeeping: counters and status are always recomputed from the job's scan rows."""
from __future__ import annotations

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from db.base import utcnow
from db.models import Job, Scan


class JobNotFound(LookupError):
    """No job with that id."""


def refresh_job(session: Session, job_id: int) -> Job:
    """Recount a job's counters from its scans and derive queued/running/done (lock held until commit)."""
    # Pending changes (a detail or `sealed` set by the caller) go to the row first, so
    # re-reading it below keeps them.
    session.flush()
    # Locking the job row serialises concurrent batches of one job, so each recount sees
    # the other's committed scan updates and the counters cannot drift. populate_existing:
    # a Job already in this session is overwritten with the locked row, so a `sealed` set
    # by another request meanwhile is seen (the identity map would keep the stale value).
    job = session.execute(select(Job).where(Job.id == job_id).with_for_update(key_share=True)
                          .execution_options(populate_existing=True)).scalar_one_or_none()
    if job is None:
        raise JobNotFound(f"job {job_id} does not exist")
    total, done, failed, reused = session.execute(
        select(func.count(Scan.id),
               func.coalesce(func.sum(case((Scan.status == "classified", 1), else_=0)), 0),
               func.coalesce(func.sum(case((Scan.status == "failed", 1), else_=0)), 0),
               func.coalesce(func.sum(case((Scan.reused.is_(True), 1), else_=0)), 0))
        .where(Scan.job_id == job_id)).one()
    job.total, job.done, job.failed, job.reused = int(total), int(done), int(failed), int(reused)
    finished = job.done + job.failed
    if job.sealed and finished == job.total:
        job.status = "done"
        job.finished = job.finished or utcnow()
        job.started = job.started or job.finished
        job.status_detail = ""
    elif finished > 0 or job.started is not None:
        job.status = "running"
        job.started = job.started or utcnow()
        job.finished = None
    else:
        job.status = "queued"
        job.finished = None
    return job


def mark_started(session: Session, job_ids: set[int]) -> None:
    """Record that a worker began on these jobs (status becomes running at the next refresh)."""
    for job_id in sorted(job_ids):
        job = session.get(Job, job_id)
        if job is not None and job.started is None:
            job.started = utcnow()
