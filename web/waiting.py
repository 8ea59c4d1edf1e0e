"""What a job with no active model version is waiting for: a training run already under way, or nobody yet.

The worker side (tasks/dispatch.py) flags such a job with WAITING_FOR_MODEL, which tells people to
register a bundle or start a run; once a run is queued or running, the pages and the status API say
that instead, so nobody starts a second run or registers a bundle by hand while the first is training.
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import TrainingRun
from tasks.dispatch import WAITING_FOR_MODEL

UNDER_WAY = ("queued", "running")


def run_under_way(session: Session) -> TrainingRun | None:
    """The training run that will bring a model soonest: the running one, else the oldest queued; None if none."""
    runs = session.execute(select(TrainingRun).where(TrainingRun.status.in_(UNDER_WAY))
                           .order_by(TrainingRun.id)).scalars().all()
    return next((r for r in runs if r.status == "running"), runs[0] if runs else None)


def run_phrase(run: TrainingRun) -> str:
    """'training run #3 is running (41%)' or 'training run #4 is queued'."""
    if run.status == "running":
        return f"training run #{run.id} is running ({int((run.progress or 0) * 100)}%)"
    return f"training run #{run.id} is queued"


def waiting_detail(session: Session, detail: str) -> str:
    """A job's status detail, with 'no active model version' told as the run under way when there is one."""
    if detail != WAITING_FOR_MODEL:
        return detail
    run = run_under_way(session)
    if run is None:
        return detail
    return (f"Waiting for the first model: {run_phrase(run)} (see Training runs); "
            "this job starts by itself once a version is active.")
