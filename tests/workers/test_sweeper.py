"""Leases and the sweeper against SQLite and PostgreSQL and a real Redis queue: nothing is stranded."""
from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import select

from db.base import utcnow
from db.models import Job, Scan, TrainingRun
from tasks.classify import _claim, classify_scans
from tasks.dispatch import dispatch_job
from tasks.leases import LeaseKeeper, renew_scan_leases
from tasks.sweeper import (fail_dead_training_runs, resend_dead_leases, resend_lost_scans,
                           send_stranded_training_runs, sweep)
from tests.workers.jobdata import activate_bundle, good_paths, make_job, queued_messages, scan_files


def _job(factory, settings, count: int = 4) -> tuple[int, list[int]]:
    every = scan_files(good=count)
    files = {path: every[path] for path in good_paths(every)}
    with factory() as session:
        job = make_job(session, settings, files)
        return job.id, [s.id for s in job.scans]


def _scans(factory, ids) -> dict[int, Scan]:
    with factory() as session:
        rows = session.scalars(select(Scan).where(Scan.id.in_(ids))).all()
        session.expunge_all()
        return {s.id: s for s in rows}


def _sent(settings) -> list[list[int]]:
    return [args[0] for _, args in queued_messages(settings.redis_url, "inference")]


def _age(factory, ids, **seconds_ago) -> None:
    """Move scan timestamps (created, dispatched_at, lease_until) into the past."""
    with factory() as session:
        for scan in session.scalars(select(Scan).where(Scan.id.in_(ids))):
            for column, ago in seconds_ago.items():
                setattr(scan, column, utcnow() - timedelta(seconds=ago))
        session.commit()


def test_a_claim_leases_scans_and_a_duplicate_delivery_leaves_them_alone(factory, settings, tiny_bundle):
    activate_bundle(factory, tiny_bundle)
    _, ids = _job(factory, settings)
    first = _claim(factory, settings, ids, "task-a")
    assert [w[0] for w in first.work] == ids and not first.skipped
    scans = _scans(factory, ids)
    assert all(s.lease_owner == "task-a" and s.attempts == 1 for s in scans.values())
    # Another task (a duplicate message) while the lease is live: nothing to do, no attempt spent.
    other = _claim(factory, settings, ids, "task-b")
    assert other.work == [] and sorted(other.skipped) == ids
    assert all(s.attempts == 1 for s in _scans(factory, ids).values())
    # The lease ran out (its worker died): the other task may take them.
    _age(factory, ids, lease_until=1)
    taken = _claim(factory, settings, ids, "task-b")
    assert [w[0] for w in taken.work] == ids
    assert all(s.lease_owner == "task-b" and s.attempts == 2 for s in _scans(factory, ids).values())


def test_a_redelivered_task_sends_the_scans_its_dead_delivery_held_one_by_one(factory, settings, tiny_bundle):
    """A pool process killed mid-task: its message comes back with the same task id; the scans
    it held go back to the queue one per task, so a poison scan cannot fail the others."""
    version_id = activate_bundle(factory, tiny_bundle)
    _, ids = _job(factory, settings)
    _claim(factory, settings, ids, "task-a")  # the delivery that died
    outcome = classify_scans(factory, settings, ids, version_id, owner="task-a")
    assert outcome.classified == []
    assert sorted(_sent(settings)) == [[i] for i in ids]
    scans = _scans(factory, ids)
    assert all(s.status == "queued" and s.lease_owner is None and s.dispatched_at for s in scans.values())
    # Each single-scan task then classifies its scan.
    for scan_id in ids:
        assert classify_scans(factory, settings, [scan_id], version_id, owner=f"single-{scan_id}"
                              ).classified == [scan_id]


def test_classified_scans_drop_their_lease(factory, settings, tiny_bundle):
    version_id = activate_bundle(factory, tiny_bundle)
    job_id, ids = _job(factory, settings)
    classify_scans(factory, settings, ids, version_id, owner="task-a")
    scans = _scans(factory, ids)
    assert all(s.status == "classified" and s.lease_owner is None and s.lease_until is None
               for s in scans.values())


def test_the_lease_keeper_renews_until_stopped(factory, settings, tiny_bundle):
    activate_bundle(factory, tiny_bundle)
    _, ids = _job(factory, settings, count=2)
    _claim(factory, settings, ids, "task-a")
    _age(factory, ids, lease_until=-1)  # about to run out
    before = {i: s.lease_until for i, s in _scans(factory, ids).items()}
    with LeaseKeeper(factory, 2, lambda session: renew_scan_leases(session, "task-a", ids, 30), "test"):
        time.sleep(1.2)  # renews every 0.5 s
    after = _scans(factory, ids)
    assert all(after[i].lease_until > before[i] + timedelta(seconds=20) for i in ids)


def test_sweeper_resends_scans_of_a_dead_worker_one_per_task_and_fails_spent_ones(factory, settings,
                                                                                 tiny_bundle):
    activate_bundle(factory, tiny_bundle)
    job_id, ids = _job(factory, settings)
    _claim(factory, settings, ids, "dead-task")
    with factory() as session:  # the first scan already used every attempt
        session.get(Scan, ids[0]).attempts = settings.max_scan_attempts
        session.commit()
    assert resend_dead_leases(factory, settings) == (0, 0), "live leases are left alone"
    _age(factory, ids, lease_until=1)
    assert resend_dead_leases(factory, settings) == (1, 3)
    assert sorted(_sent(settings)) == [[i] for i in ids[1:]]
    scans = _scans(factory, ids)
    assert scans[ids[0]].status == "failed" and "gave up after 3 attempt(s)" in scans[ids[0]].error
    assert all(scans[i].status == "queued" and scans[i].lease_until is None for i in ids[1:])
    assert resend_dead_leases(factory, settings) == (0, 0), "each dead lease is handled once"
    with factory() as session:
        assert session.get(Job, job_id).failed == 1


def test_sweeper_sends_scans_whose_sender_died_before_sending(factory, settings, tiny_bundle):
    """The web committed the job and died before the send: no flag, no message, no mark."""
    activate_bundle(factory, tiny_bundle)
    _, ids = _job(factory, settings)
    sweep(factory, settings)
    assert _sent(settings) == [], "a scan just committed may still be on its way"
    _age(factory, ids, created=settings.scan_lease_s + 1)
    assert sweep(factory, settings).jobs_dispatched == 1
    assert _sent(settings) == [ids]
    assert all(s.dispatched_at is not None for s in _scans(factory, ids).values())
    assert sweep(factory, settings).jobs_dispatched == 0 and _sent(settings) == [ids]


def test_sweeper_resends_scans_lost_from_the_broker(factory, settings, tiny_bundle):
    """A Redis restarted without persistence forgot the messages: once the queue cannot hold the
    scans that waited longer than a lease, the oldest go again; while it can, nothing is sent."""
    import redis

    activate_bundle(factory, tiny_bundle)
    job_id, ids = _job(factory, settings)
    dispatch_job(factory, job_id, settings)
    assert _sent(settings) == [ids]
    _age(factory, ids, dispatched_at=settings.scan_lease_s + 1)
    assert resend_lost_scans(factory, settings, queue_depth=1) == 0, "the message may still be queued"
    redis.Redis.from_url(settings.redis_url).flushdb()  # the broker forgets
    assert sweep(factory, settings).resent_lost == 4
    assert _sent(settings) == [ids]
    assert sweep(factory, settings).resent_lost == 0, "just re-sent: not lost again yet"


def test_training_run_whose_worker_died_is_failed_and_stranded_runs_are_sent(factory, settings):
    now = utcnow()
    with factory() as session:
        dead = TrainingRun(status="running", started=now - timedelta(hours=1),
                           lease_until=now - timedelta(seconds=1))
        alive = TrainingRun(status="running", started=now, lease_until=now + timedelta(minutes=1))
        unsent = TrainingRun(status="queued", created=now - timedelta(minutes=5))
        session.add_all([dead, alive, unsent])
        session.commit()
        dead_id, alive_id, unsent_id = dead.id, alive.id, unsent.id
    assert fail_dead_training_runs(factory, settings) == 1
    with factory() as session:
        run = session.get(TrainingRun, dead_id)
        assert run.status == "failed" and "interrupted" in run.error and "unchanged" in run.error
        assert session.get(TrainingRun, alive_id).status == "running"
    # Never sent: sent now, whatever else trains.
    assert send_stranded_training_runs(factory, settings, queue_depth=0) == 1
    assert [args for _, args in queued_messages(settings.redis_url, "training")] == [[unsent_id]]
    with factory() as session:
        session.get(TrainingRun, unsent_id).dispatched_at = now - timedelta(minutes=5)
        session.commit()
    # Sent long ago, and another run trains: it waits its turn in the broker.
    assert send_stranded_training_runs(factory, settings, queue_depth=0) == 0
    with factory() as session:
        session.get(TrainingRun, alive_id).status = "succeeded"
        session.commit()
    assert send_stranded_training_runs(factory, settings, queue_depth=1) == 0
    # Nothing trains and the training queue is empty: its message was lost.
    assert send_stranded_training_runs(factory, settings, queue_depth=0) == 1
