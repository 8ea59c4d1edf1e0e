"""Re-send unfinished work when `make run` starts on a broker that forgets.

A private redis-server keeps nothing on disk, and the filesystem transport deletes a
message as soon as a worker takes it, so after Ctrl-C the queued scans and the training
run that was in progress have no message left: without this they would wait forever
(or until the visibility timeout, hours later). The local runner is the only consumer
of such a broker, so before its worker starts it clears what the broker still holds and
sends every open piece of work once. Predictions are written idempotently, so a scan
sent twice costs time, never a wrong count.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Mapping

from sqlalchemy import select, update

from config.settings import load_settings
from db.models import Job, Scan, TrainingRun
from db.session import make_engine, make_session_factory

logger = logging.getLogger(__name__)
FORGETFUL_BROKERS = ("private-redis", "filesystem")


def clear_filesystem_queue(data_dir: Path) -> int:
    """Delete the messages left in DATA_DIR/broker/queue; return how many there were."""
    queue = Path(data_dir) / "broker" / "queue"
    if not queue.is_dir():
        return 0
    count = sum(1 for _ in queue.iterdir())
    shutil.rmtree(queue)
    queue.mkdir(parents=True)
    return count


def resend_open_work(env: Mapping[str, str], broker_kind: str) -> list[str]:
    """Clear a local broker and re-send open training runs and jobs; return status lines."""
    if broker_kind not in FORGETFUL_BROKERS:
        return []
    from tasks.dispatch import dispatch_job, enqueue_training  # imports Celery: only when needed
    from tasks.sweeper import clear_scan_leases

    settings = load_settings(env, overrides={"secret_key": ""})
    if broker_kind == "filesystem":
        clear_filesystem_queue(settings.data_dir)
    engine = make_engine(settings.database_url)
    try:
        factory = make_session_factory(engine)
        with factory() as session:
            # No worker runs yet and the broker forgot everything: every lease is stale and
            # every queued scan unsent; a run that was training starts over.
            clear_scan_leases(session)
            session.execute(update(TrainingRun).where(TrainingRun.status == "running")
                            .values(status="queued", lease_until=None))
            session.commit()
            runs = list(session.execute(select(TrainingRun.id).where(
                TrainingRun.status.in_(("queued", "running"))).order_by(TrainingRun.id)).scalars())
            jobs = list(session.execute(select(Job.id).where(
                Job.status != "done", Job.id.in_(select(Scan.job_id).where(Scan.status == "queued")))
                .order_by(Job.id)).scalars())
        for run_id in runs:
            enqueue_training(run_id, settings, factory)
        for job_id in jobs:
            dispatch_job(factory, job_id, settings)
    finally:
        engine.dispose()
    lines = []
    if runs:
        lines.append(f"re-sent unfinished training run(s) {', '.join(f'#{r}' for r in runs)} "
                     "(they restart from the beginning)")
    if jobs:
        lines.append(f"re-sent the queued scans of {len(jobs)} unfinished job(s)")
    return lines
