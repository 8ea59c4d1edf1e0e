"""Leases on queued scans and training runs: who works on them, until when, and renewing that.

A worker that takes scans writes its task id and an expiry onto each, and a
`LeaseKeeper` thread pushes the expiry forward while the task runs. If the whole
worker dies (OOM killer, node loss, `kill -9` of its process group) nothing renews
the lease, and the sweeper re-sends the scans once it has run out. A late or
duplicate delivery of the same scans finds them leased by a live task, or already
classified, and leaves them alone.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any, Sequence

from sqlalchemy import or_, update
from sqlalchemy.orm import Session, sessionmaker

from db.base import utcnow
from db.models import Scan, TrainingRun

logger = logging.getLogger(__name__)
_IN_CHUNK = 500


def sweep_interval_s(scan_lease_s: int) -> float:
    """How often beat runs the sweeper: half a lease, at least every 5 s and at most every minute."""
    return float(min(60, max(5, scan_lease_s // 2)))


def lease_expiry(lease_s: int, now: datetime | None = None) -> datetime:
    """When a lease taken now runs out."""
    return (now or utcnow()) + timedelta(seconds=lease_s)


def claimable(owner: str, now: datetime) -> Any:
    """SQL condition: a queued scan nobody else holds a live lease on."""
    return or_(Scan.lease_until.is_(None), Scan.lease_until < now, Scan.lease_owner == owner)


def renew_scan_leases(session: Session, owner: str, scan_ids: Sequence[int], lease_s: int) -> int:
    """Push the lease of `owner`'s still-queued scans forward; return how many were renewed."""
    until, renewed = lease_expiry(lease_s), 0
    for start in range(0, len(scan_ids), _IN_CHUNK):
        chunk = list(scan_ids[start:start + _IN_CHUNK])
        result = session.execute(update(Scan).where(
            Scan.id.in_(chunk), Scan.status == "queued", Scan.lease_owner == owner)
            .values(lease_until=until).execution_options(synchronize_session=False))
        renewed += result.rowcount or 0
    return renewed


def release_scan_leases(session: Session, owner: str, scan_ids: Sequence[int]) -> None:
    """Give up `owner`'s leases on these scans (after a failure that will be retried)."""
    for start in range(0, len(scan_ids), _IN_CHUNK):
        chunk = list(scan_ids[start:start + _IN_CHUNK])
        session.execute(update(Scan).where(Scan.id.in_(chunk), Scan.lease_owner == owner)
                        .values(lease_owner=None, lease_until=None)
                        .execution_options(synchronize_session=False))


def renew_run_lease(session: Session, run_id: int, lease_s: int) -> int:
    """Push a running training run's lease forward; return 1 if it was renewed."""
    result = session.execute(update(TrainingRun).where(
        TrainingRun.id == run_id, TrainingRun.status == "running")
        .values(lease_until=lease_expiry(lease_s)).execution_options(synchronize_session=False))
    return result.rowcount or 0


class LeaseKeeper:
    """A daemon thread that renews a lease every lease_s / 4 seconds until stopped.

    Renewing from a thread (not only between engine batches) keeps the lease alive
    while the engine loads or a long batch computes; a database outage only logs, and
    the lease then runs out as if the worker had died, which the sweeper handles.
    """

    def __init__(self, session_factory: sessionmaker[Session], lease_s: int, renew: Any,
                 what: str) -> None:
        """`renew(session)` pushes the lease forward inside a transaction that is then committed."""
        self.session_factory, self.lease_s, self.renew, self.what = session_factory, lease_s, renew, what
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-keeper {what}", daemon=True)

    def __enter__(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        interval = max(self.lease_s / 4.0, 0.5)
        while not self._stop.wait(interval):
            try:
                with self.session_factory() as session:
                    self.renew(session)
                    session.commit()
            except Exception as exc:  # the lease then runs out; the sweeper takes over
                logger.warning("could not renew the lease of %s: %s: %s", self.what, type(exc).__name__, exc)
