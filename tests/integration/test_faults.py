"""Faults with real processes: whole workers killed, a poison scan, a lost sender, a dead training run.

Each test runs real `celery -A workers worker` and `celery -A workers beat` processes
(plain-shell environment) against PostgreSQL and Redis, with a short SCAN_LEASE_S so
the sweeper acts within seconds.
"""
from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import func, select, text

from db.migrate import upgrade
from db.models import Job, ModelVersion, Prediction, Scan, TrainingRun
from tasks.dispatch import dispatch_job, enqueue_training
from tasks.train import create_scheduled_run
from tests.integration.conftest import worker_env
from db.session import make_engine, make_session_factory
from tests.helpers.services import PrivatePostgres, PrivateRedis
from tests.integration.worker_process import Beat, Worker, wait_for
from tests.workers.jobdata import activate_bundle, make_job, service_settings

pytestmark = pytest.mark.integration
MODELS = 6  # five models and the ensemble
LEASE = "6"  # SCAN_LEASE_S for these tests: leases renewed every 1.5 s, a sweep every 5 s


def distinct_scans(count: int, size: int = 32) -> dict[str, bytes]:
    """`count` different small PNG scans (distinct bytes, so none is answered from another)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(7)
    files = {}
    for i in range(count):
        image = rng.integers(0, 255, size=(size, size), dtype=np.uint8)
        ok, data = cv2.imencode(".png", image)
        assert ok
        files[f"study{i % 4}/slice_{i:04d}.png"] = data.tobytes()
    return files


def _counts(factory, job_id: int) -> tuple[int, int, int]:
    with factory() as session:
        job = session.get(Job, job_id)
        return job.done, job.failed, job.total


def _held(factory, job_id: int) -> int:
    """Scans of the job a worker holds a lease on right now."""
    with factory() as session:
        return session.scalar(select(func.count(Scan.id)).where(
            Scan.job_id == job_id, Scan.status == "queued", Scan.lease_owner.is_not(None))) or 0


def _kill_while_holding_scans(worker, factory, job_id: int) -> int:
    """kill -9 the worker's process group at a moment it holds leased scans (mid-task): it is
    paused (SIGSTOP) while the database is looked at, so it cannot finish the task in between.
    Returns how many it held when killed (counted then: on a loaded machine the sweeper may
    take them back within a second, when the lease was about to run out anyway)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        worker.pause_group()
        held = _held(factory, job_id)
        if held:
            worker.kill_group()
            return held
        worker.pause_group(False)
        time.sleep(0.02)
    pytest.fail("the worker never held scans of the job")


def _assert_classified_exactly_once(factory, job_id: int, expected: int) -> None:
    with factory() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.done, job.failed, job.total) == ("done", expected, 0, expected)
        per_scan = dict(session.execute(
            select(Prediction.scan_id, func.count(Prediction.id)).join(Scan, Scan.id == Prediction.scan_id)
            .where(Scan.job_id == job_id).group_by(Prediction.scan_id)).all())
        assert len(per_scan) == expected and set(per_scan.values()) == {MODELS}
        versions = set(session.scalars(select(Scan.model_version_id).where(Scan.job_id == job_id)))
        assert len(versions) == 1 and None not in versions


@pytest.fixture()
def beat(service, tmp_path):
    """A real beat process scheduling the sweeper every 5 s for this test's service."""
    settings, _ = service
    process = Beat(worker_env(settings, SCAN_LEASE_S=LEASE), tmp_path / "beat.log",
                   tmp_path / "celerybeat-schedule")
    yield process
    process.stop()


def _service_on(tmp_path, database_url: str, redis_url: str, **overrides):
    """(settings, session factory) of a service on these database and Redis URLs (migrated)."""
    upgrade(database_url)
    settings = service_settings(tmp_path, database_url, redis_url, **overrides)
    return settings, make_session_factory(make_engine(database_url))


@pytest.fixture()
def start_worker_on(tmp_path, request):
    """start_worker_on(settings, **env) → (worker, beat) for a service on private Redis/PostgreSQL."""
    started: list = []

    def start(settings, **extra: str):
        env = worker_env(settings, **extra)
        worker = Worker(env, tmp_path / f"worker{len(started)}.log", "solo")
        beat = Beat(env, tmp_path / f"beat{len(started)}.log", tmp_path / f"celerybeat-schedule{len(started)}")
        started.extend([worker, beat])
        return worker, beat

    yield start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for process in started:
        process.stop()
        if failed:
            print(process.output()[-4000:])


def test_whole_worker_killed_twice_mid_job_every_scan_classified_once(service, start_worker, beat,
                                                                     tiny_bundle):
    """kill -9 of the worker's whole process group, twice during a 240-scan job: a new worker
    finishes the job within seconds of starting, every scan classified exactly once.
    (bench/recovery.py measures the same with 400 real scans and the default SCAN_LEASE_S.)"""
    settings, factory = service
    activate_bundle(factory, tiny_bundle)
    with factory() as session:
        job_id = make_job(session, settings, distinct_scans(240)).id
        # Committed and never sent, as when the web process dies between its commit and the send.
        unsent_id = make_job(session, settings, distinct_scans(8, size=24)).id
    worker = start_worker(pool="prefork", SCAN_LEASE_S=LEASE)
    dispatch_job(factory, job_id, settings)
    stranded = []
    for kill_at in (40, 120):
        wait_for(lambda: _counts(factory, job_id)[0] >= kill_at, 180, f"{kill_at} scans classified", worker)
        stranded.append(_kill_while_holding_scans(worker, factory, job_id))
        assert _counts(factory, job_id)[0] < 240, "the kill must land mid-job"
        worker = start_worker(pool="prefork", SCAN_LEASE_S=LEASE)
        restarted = time.monotonic()
    wait_for(lambda: _counts(factory, job_id)[2] == sum(_counts(factory, job_id)[:2]), 180,
             "the job to finish after the second kill", worker)
    recovery_s = time.monotonic() - restarted
    _assert_classified_exactly_once(factory, job_id, 240)
    wait_for(lambda: _counts(factory, unsent_id)[0] == 8, 60, "the never-sent job", worker)
    _assert_classified_exactly_once(factory, unsent_id, 8)
    with factory() as session:
        attempts = list(session.scalars(select(Scan.attempts).where(Scan.job_id == job_id)))
    assert max(attempts) <= 3 and "re-sent one per task" in _all_logs(worker)
    print(f"\nkilled twice; stranded {stranded} leased scans; finished {recovery_s:.1f} s after the last "
          f"worker was ready (SCAN_LEASE_S={LEASE})")




def _all_logs(worker) -> str:
    return "".join(p.read_text() for p in worker.log_path.parent.glob("worker*.log"))


def _hold_scan(engine, scan_id: int, version_id: int):
    """Open a transaction holding an uncommitted prediction of the scan: a worker storing it waits
    on it, which is how the tests tell the moment a worker is busy with that scan."""
    conn = engine.connect()
    conn.execute(text("INSERT INTO predictions (scan_id, model_version_id, model_name, label, confidence, "
                      "probabilities, created) VALUES (:s, :v, 'ensemble', 'x', 0, '{}', now())"),
                 {"s": scan_id, "v": version_id})
    pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    return conn, pid


def _end_waiters(engine, pid: int) -> None:
    """Terminate the database sessions of a killed worker still waiting on the hold: PostgreSQL
    would end them on its own once they proceed and find their client gone, but one that
    proceeds after the next hold is taken would then wait on that hold and look like a worker."""
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE :pid = ANY(pg_blocking_pids(pid))"), {"pid": pid})


def _someone_waits_on(engine, pid: int) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(text("SELECT count(*) FROM pg_stat_activity "
                                      "WHERE :pid = ANY(pg_blocking_pids(pid))"), {"pid": pid}).scalar())


def test_poison_scan_that_kills_its_worker_each_time_fails_alone(service, start_worker, beat, tiny_bundle):
    """Whenever a worker is busy with one particular scan, its whole process group is killed. That
    scan ends failed with the reason after MAX_SCAN_ATTEMPTS (3) kills; the rest of the job completes."""
    settings, factory = service
    version_id = activate_bundle(factory, tiny_bundle)
    with factory() as session:
        job = make_job(session, settings, distinct_scans(40))
        job_id, poison = job.id, job.scans[5].id
    probe = make_engine(settings.database_url)
    held, pid = _hold_scan(probe, poison, version_id)
    worker = start_worker(pool="prefork", SCAN_LEASE_S=LEASE)
    dispatch_job(factory, job_id, settings)

    def poison_failed() -> bool:
        with factory() as session:
            return session.get(Scan, poison).status == "failed"

    kills = 0
    try:
        while True:
            wait_for(lambda: poison_failed() or _someone_waits_on(probe, pid), 120,
                     "a worker to take the poison scan, or the poison scan to fail", worker)
            if poison_failed():
                break
            worker.kill_group()
            kills += 1
            _end_waiters(probe, pid)
            held.rollback()
            held.close()
            held, pid = _hold_scan(probe, poison, version_id)
            worker = start_worker(pool="prefork", SCAN_LEASE_S=LEASE)
    finally:
        held.rollback()
        held.close()
        probe.dispose()
    wait_for(lambda: _counts(factory, job_id)[0] == 39, 120, "the rest of the job", worker)
    with factory() as session:
        job = session.get(Job, job_id)
        scan = session.get(Scan, poison)
        assert (job.status, job.done, job.failed) == ("done", 39, 1)
        assert scan.attempts == 3 and scan.error.startswith("gave up after 3 attempt(s)") and not scan.predictions
        others = session.scalars(select(Scan).where(Scan.job_id == job_id, Scan.id != poison)).all()
        assert all(len(s.predictions) == MODELS and s.attempts <= 2 for s in others)
    assert kills == 3


def test_redis_restarted_mid_job_the_job_completes(postgres_url, tmp_path, start_worker_on, tiny_bundle):
    """A memory-only Redis killed and started again mid-job forgets every queued message: the
    sweeper re-sends what was lost and the job completes, each scan classified once."""
    redis_server = PrivateRedis(tmp_path)
    try:
        settings, factory = _service_on(tmp_path, postgres_url, redis_server.url)
        activate_bundle(factory, tiny_bundle)
        with factory() as session:
            job_id = make_job(session, settings, distinct_scans(300)).id
        worker, beat = start_worker_on(settings, SCAN_LEASE_S=LEASE)
        dispatch_job(factory, job_id, settings)
        wait_for(lambda: _counts(factory, job_id)[0] >= 40, 120, "40 scans classified", worker)
        redis_server.stop()
        time.sleep(2)
        redis_server.start()
        assert _counts(factory, job_id)[0] < 300, "the restart must land mid-job"
        restarted = time.monotonic()
        wait_for(lambda: _counts(factory, job_id)[0] == 300, 180, "the job after the Redis restart", worker)
        print(f"\nRedis restarted mid-job; the job finished {time.monotonic() - restarted:.1f} s later")
        _assert_classified_exactly_once(factory, job_id, 300)
    finally:
        redis_server.stop()


def test_postgres_stopped_20_s_mid_job_nothing_lost_and_the_web_answers_503(broker_url, tmp_path,
                                                                            start_worker_on, tiny_bundle):
    """PostgreSQL stopped for 20 s mid-job: tasks retry with backoff, the web answers 503 JSON
    (no stack trace), and once it is back the job completes with every scan classified once."""
    from web import create_app
    from web.auth import get_or_create_user, issue_token

    postgres = PrivatePostgres()
    try:
        settings, factory = _service_on(tmp_path, postgres.url, broker_url,
                                        broker_key_prefix=f"pg-{uuid.uuid4().hex[:8]}:")
        activate_bundle(factory, tiny_bundle)
        app = create_app({"env": "test", "data_dir": settings.data_dir, "database_url": settings.database_url,
                          "redis_url": broker_url, "broker_key_prefix": settings.broker_key_prefix})
        with factory() as session:
            job_id = make_job(session, settings, distinct_scans(200)).id
            token = issue_token(session, get_or_create_user(session, "viewer", "viewer"))
            session.commit()
        worker, beat = start_worker_on(settings, SCAN_LEASE_S=LEASE)
        dispatch_job(factory, job_id, settings)
        wait_for(lambda: _counts(factory, job_id)[0] >= 30, 120, "30 scans classified", worker)
        postgres.stop()
        stopped = time.monotonic()
        client = app.test_client()
        answer = client.get(f"/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"})
        health = client.get("/healthz")
        assert answer.status_code == 503 and answer.is_json, answer.data[:500]
        assert answer.json["error"] == "database_unavailable" and "Traceback" not in answer.get_data(True)
        assert health.status_code == 503 and health.json["database"] != "ok"
        time.sleep(max(0.0, 20 - (time.monotonic() - stopped)))
        postgres.start()
        back = time.monotonic()
        wait_for(lambda: _counts(factory, job_id)[0] == 200, 240, "the job after PostgreSQL came back", worker)
        print(f"\nPostgreSQL stopped 20 s mid-job; the job finished {time.monotonic() - back:.1f} s after it "
              "came back")
        _assert_classified_exactly_once(factory, job_id, 200)
        assert client.get(f"/api/v1/jobs/{job_id}",
                          headers={"Authorization": f"Bearer {token}"}).json["status"] == "done"
        assert "Retry in" in worker.output()
        app.extensions["mri"].engine.dispose()
    finally:
        postgres.remove()


def test_training_worker_killed_mid_run_fails_the_run_and_frees_the_schedule(service, start_worker, beat,
                                                                            tiny_bundle, tmp_path):
    """The training worker's process group is killed mid-run: the sweeper marks the run failed once
    its lease runs out, the active version is untouched, and the next scheduled run is not blocked."""
    from tests.integration.test_worker_flow import _labelled_folder

    settings, factory = service
    active_id = activate_bundle(factory, tiny_bundle)
    data = _labelled_folder(tmp_path / "labelled", per_class=12)
    with factory() as session:
        run = TrainingRun(trigger="manual", params={
            "epochs": 30, "cnn_epochs": 30, "image_size": 32, "batch_size": 8, "views": 1,
            "backbone_weights": "none", "val_fraction": 0.25})
        session.add(run)
        session.commit()
        run_id = run.id
    # Sweeps run on the inference worker; the training worker alone is killed.
    start_worker(queues="inference,default", SCAN_LEASE_S=LEASE, TRAINING_LEASE_S="10")
    trainer = start_worker(queues="training", SCAN_LEASE_S=LEASE, TRAINING_LEASE_S="10",
                           TRAINING_DATA_DIR=str(data))
    enqueue_training(run_id, settings, factory)

    def run_row() -> TrainingRun:
        with factory() as session:
            return session.get(TrainingRun, run_id)

    wait_for(lambda: run_row().status == "running" and run_row().progress > 0, 120, "the run to train", trainer)
    trainer.kill_group()
    killed = time.monotonic()
    wait_for(lambda: run_row().status == "failed", 90, "the sweeper to fail the dead run")
    print(f"\ntraining worker killed; the run was failed {time.monotonic() - killed:.1f} s later "
          "(TRAINING_LEASE_S=10)")
    assert "interrupted" in run_row().error
    with factory() as session:
        assert session.get(ModelVersion, active_id).status == "active"
        assert session.scalar(select(func.count(ModelVersion.id))) == 1
    assert create_scheduled_run(factory, settings.replace(training_data_dir=data)) not in (None, run_id)
