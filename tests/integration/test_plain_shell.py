"""The documented commands work in a plain shell: no PYTHONPATH, any folder, any worker pool."""
from __future__ import annotations

import subprocess

import pytest

from db.models import Job
from tasks.dispatch import dispatch_job
from tasks.versions import activate_version, register_bundle
from tests.integration.worker_process import VENV_BIN, clean_env, wait_for
from tests.workers.jobdata import make_job, scan_files

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("pool", ["threads"])
def test_worker_started_from_another_folder_classifies(service, start_worker, tiny_bundle, tmp_path, pool):
    """`celery -A workers worker` from a folder that is not the repository, with nothing but the
    virtualenv on PATH: the engine (models, training) imports in the pool, and a job finishes.

    Every integration test starts its workers with such a plain environment; between them
    they use the prefork (test_faults), solo (test_worker_flow, test_faults) and threads pools.
    """
    settings, factory = service
    with factory() as session:
        activate_version(session, register_bundle(session, tiny_bundle))
        session.commit()
        job_id = make_job(session, settings, scan_files(good=3)).id
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    worker = start_worker(pool=pool, cwd=elsewhere)
    dispatch_job(factory, job_id, settings)

    def done() -> bool:
        with factory() as session:
            return session.get(Job, job_id).status == "done"

    wait_for(done, 120, f"the job on a {pool} worker", worker)
    _healthz_lists_the_worker(settings, worker)
    with factory() as session:
        job = session.get(Job, job_id)
        assert (job.done, job.failed) == (3, 2), worker.output()[-3000:]
    assert "ModuleNotFoundError" not in worker.output()


def test_flask_and_training_commands_from_another_folder(tmp_path):
    """`flask --app web db upgrade` and `python -m training --help` in a plain shell elsewhere."""
    env = clean_env(DATA_DIR=str(tmp_path / "data"), SECRET_KEY="plain-shell-test-key")
    upgrade = subprocess.run([str(VENV_BIN / "flask"), "--app", "web", "db", "upgrade"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=120)
    assert upgrade.returncode == 0, upgrade.stderr
    assert (tmp_path / "data" / "service.db").is_file()
    training = subprocess.run([str(VENV_BIN / "python"), "-m", "training", "--help"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
    assert training.returncode == 0 and "train" in training.stdout, training.stderr


def _healthz_lists_the_worker(settings, worker) -> None:
    """/healthz names the running worker under each queue it consumes."""
    from web import create_app

    app = create_app({"env": "test", "data_dir": settings.data_dir, "database_url": settings.database_url,
                      "redis_url": settings.redis_url, "broker_key_prefix": settings.broker_key_prefix})
    body = app.test_client().get("/healthz").get_json()
    app.extensions["mri"].engine.dispose()
    name = next(line for line in worker.output().splitlines() if "@" in line and "ready" in line)
    for queue in ("inference", "training", "default"):
        assert len(body["queues"][queue]["workers"]) == 1, body
        assert body["queues"][queue]["workers"][0].split("@")[0] in name
    assert body["oldest_queued_scan_s"] is None and body["warnings"] == []
