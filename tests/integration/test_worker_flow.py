"""Against a real Celery worker subprocess, PostgreSQL and Redis: classify, reuse, crash, retrain."""
from __future__ import annotations

import os
import shutil
import signal

import cv2
import pytest
from sqlalchemy import func, select

from db.models import Job, ModelVersion, Prediction, Scan, TrainingRun
from tasks.dispatch import WAITING_FOR_MODEL, dispatch_job, enqueue_training
from tests.integration.worker_process import wait_for
from tests.workers.jobdata import activate_bundle, good_paths, make_job, scan_files

pytestmark = pytest.mark.integration
MODELS = {"resnet50", "vgg16", "custom_cnn", "svm", "random_forest", "ensemble"}


def _job_done(factory, job_id: int) -> bool:
    with factory() as session:
        return session.get(Job, job_id).status == "done"


def test_job_of_good_and_bad_files_then_reupload_reuses(service, start_worker, tiny_bundle):
    settings, factory = service
    version_id = activate_bundle(factory, tiny_bundle)
    files = scan_files(good=6)
    with factory() as session:
        job_id = make_job(session, settings, files).id
    worker = start_worker()
    dispatch_job(factory, job_id, settings)
    wait_for(lambda: _job_done(factory, job_id), 180, "the job to finish", worker)
    with factory() as session:
        job = session.get(Job, job_id)
        assert (job.total, job.done, job.failed, job.reused) == (8, 6, 2, 0)
        for scan in job.scans:
            if scan.path in good_paths(files):
                assert scan.status == "classified" and scan.model_version_id == version_id
                assert {p.model_name for p in scan.predictions} == MODELS
            else:
                assert scan.status == "failed" and scan.error and not scan.predictions
        first_ensemble = {s.sha256: next(p.label for p in s.predictions if p.model_name == "ensemble")
                          for s in job.scans if s.status == "classified"}
        second_id = make_job(session, settings, files).id
    dispatch_job(factory, second_id, settings)
    wait_for(lambda: _job_done(factory, second_id), 120, "the re-upload to finish", worker)
    with factory() as session:
        job = session.get(Job, second_id)
        assert (job.done, job.failed, job.reused) == (6, 2, 6)
        for scan in job.scans:
            if scan.status == "classified":
                ensemble = next(p for p in scan.predictions if p.model_name == "ensemble")
                assert ensemble.label == first_ensemble[scan.sha256]
                assert len(scan.predictions) == len(MODELS) and scan.attempts == 0
    assert "classified" in worker.output()


@pytest.mark.parametrize("max_attempts, outcome", [(1, "failed"), (3, "classified")])
def test_worker_killed_mid_batch(service, start_worker, tiny_bundle, max_attempts, outcome):
    """A pool process dies mid-task: the batch is delivered again; the attempt limit bounds it."""
    settings, factory = service
    activate_bundle(factory, tiny_bundle)
    with factory() as session:
        job = make_job(session, settings, {"a.png": scan_files(good=2)["study1/slice_001.png"]})
        job_id, scan_id = job.id, job.scans[0].id
    worker = start_worker(pool="prefork", MAX_SCAN_ATTEMPTS=str(max_attempts))
    dispatch_job(factory, job_id, settings)

    def attempts() -> int:
        with factory() as session:
            return session.get(Scan, scan_id).attempts

    # The attempt is committed before the engine loads (seconds), so the kill lands mid-task.
    wait_for(lambda: attempts() >= 1, 60, "the first attempt", worker)
    with factory() as session:
        assert session.get(Scan, scan_id).status == "queued"
    for pid in worker.children():
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _job_done(factory, job_id), 180, "the retried batch", worker)
    with factory() as session:
        scan = session.get(Scan, scan_id)
        assert scan.attempts == 2 and scan.status == outcome
        if outcome == "failed":
            assert "gave up after 1 attempt" in scan.error
        else:
            assert len(scan.predictions) == len(MODELS)


def _run_job(service, worker, files: dict[str, bytes], timeout_s: float, what: str):
    """Store a job with these files, dispatch it to the running `worker`, wait until it is done; its id."""
    settings, factory = service
    with factory() as session:
        job_id = make_job(session, settings, files).id
    dispatch_job(factory, job_id, settings)
    wait_for(lambda: _job_done(factory, job_id), timeout_s, what, worker)
    return job_id


def test_unloadable_bundle_fails_the_scans_and_the_job_finishes(service, start_worker, tiny_bundle, tmp_path):
    """The worker cannot load the active version: the batch is retried, then its scans fail with a reason."""
    settings, factory = service
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    version_id = activate_bundle(factory, broken)
    (broken / "random_forest.joblib").unlink()
    worker = start_worker(MAX_SCAN_ATTEMPTS="2")
    job_id = _run_job(service, worker, {"a.png": scan_files(good=2)["study1/slice_001.png"]}, 120,
                      "the job to give up on the broken bundle")
    with factory() as session:
        job = session.get(Job, job_id)
        assert (job.done, job.failed) == (0, 1)
        scan = job.scans[0]
        assert scan.status == "failed" and scan.attempts == 2
        assert scan.error.startswith(f"model version {version_id} could not be loaded")
        assert "random_forest.joblib" in scan.error
    assert "Retry in" in worker.output()


def _labelled_folder(root, per_class: int = 8):
    from tests.helpers.tiny_bundle import CLASSES, synthetic_images

    images, labels = synthetic_images(per_class=per_class, image_size=48, seed=3)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"img_{i:03d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return root


def test_training_run_produces_an_active_version_and_starts_waiting_jobs(service, start_worker, tmp_path):
    settings, factory = service
    data = _labelled_folder(tmp_path / "labelled")
    with factory() as session:
        job_id = make_job(session, settings, scan_files(good=2)).id
    dispatch_job(factory, job_id, settings)
    with factory() as session:
        assert session.get(Job, job_id).status_detail == WAITING_FOR_MODEL
        run = TrainingRun(trigger="manual", params={
            "epochs": 1, "cnn_epochs": 1, "image_size": 32, "batch_size": 16, "views": 1,
            "backbone_weights": "none", "val_fraction": 0.25})
        session.add(run)
        session.commit()
        run_id = run.id
    worker = start_worker(TRAINING_DATA_DIR=str(data))
    enqueue_training(run_id, settings)

    def finished() -> bool:
        with factory() as session:
            return session.get(TrainingRun, run_id).status in ("succeeded", "failed")

    wait_for(finished, 400, "the training run", worker)
    with factory() as session:
        run = session.get(TrainingRun, run_id)
        assert run.status == "succeeded", f"{run.error}\n{run.log}"
        assert run.progress == 1.0 and "[gate]" in run.log and run.log.count("\n") >= 3
        version = session.get(ModelVersion, run.model_version_id)
        assert version.status == "active" and version.bundle_path.startswith(str(settings.bundles_dir))
        assert version.metrics["ensemble"]["accuracy"] >= 0
    wait_for(lambda: _job_done(factory, job_id), 120, "the waiting job to run on the new version", worker)
    with factory() as session:
        job = session.get(Job, job_id)
        assert (job.done, job.failed) == (2, 2)
        count = session.scalar(select(func.count(Prediction.id)).where(
            Prediction.model_version_id == version.id))
        assert count == 2 * len(MODELS)


def test_embedded_filesystem_broker(service, start_worker, tiny_bundle):
    """With BROKER_URL=filesystem:// (no Redis needed) a real worker still classifies a job."""
    settings, factory = service
    settings = settings.replace(broker_url="filesystem://")
    activate_bundle(factory, tiny_bundle)
    job_id = _run_job((settings, factory), start_worker(BROKER_URL="filesystem://"), scan_files(good=2),
                      180, "the job over the filesystem broker")
    with factory() as session:
        job = session.get(Job, job_id)
        assert (job.done, job.failed) == (2, 2)
    assert not any((settings.data_dir / "broker" / "queue").iterdir()), "acknowledged messages are removed"
