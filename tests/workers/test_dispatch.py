"""Dispatch, reuse, versions and job counters against SQLite and PostgreSQL (real Redis queue)."""
from __future__ import annotations

import dataclasses

import json
import shutil

import pytest
from sqlalchemy import func, select

from db.models import Job, ModelVersion, Prediction, Scan
from models.bundle import BundleError
from tasks.dispatch import BROKER_UNREACHABLE, WAITING_FOR_MODEL, dispatch_job, dispatch_waiting_jobs
from tasks.jobs import refresh_job
from tasks.store import insert_predictions
from tasks.versions import activate_version, active_version, register_bundle
from tests.workers.jobdata import make_job, queued_messages, scan_files

PROBS = {"glioma": 0.7, "meningioma": 0.1, "notumor": 0.1, "pituitary": 0.1}
MODELS = ("resnet50", "vgg16", "custom_cnn", "svm", "random_forest", "ensemble")


def _classify_by_hand(session, scan: Scan, version_id: int) -> None:
    """Store a complete prediction set the way a worker would (used as a reuse donor)."""
    insert_predictions(session, [dict(scan_id=scan.id, model_version_id=version_id, model_name=m,
                                      label="glioma", confidence=0.7, probabilities=PROBS,
                                      agreement=5 if m == "ensemble" else None, latency_ms=12.0)
                                 for m in MODELS])
    scan.status, scan.model_version_id = "classified", version_id


def _version(session, tiny_bundle) -> ModelVersion:
    version = register_bundle(session, tiny_bundle)
    activate_version(session, version)
    session.commit()
    return version


def test_refresh_job_counts_and_status(factory, settings):
    with factory() as session:
        job = make_job(session, settings, {"a.jpg": b"1", "b.jpg": b"2", "c.jpg": b"3"}, sealed=False)
        assert refresh_job(session, job.id).status == "queued"
        scans = job.scans
        scans[0].status, scans[0].reused = "classified", True
        scans[1].status, scans[1].error = "failed", "truncated JPEG"
        job = refresh_job(session, job.id)
        assert (job.total, job.done, job.failed, job.reused, job.status) == (3, 1, 1, 1, "running")
        scans[2].status = "classified"
        job = refresh_job(session, job.id)
        assert job.status == "running" and job.finished is None, "an open job is never done"
        job.sealed = True
        job = refresh_job(session, job.id)
        assert job.status == "done" and job.finished is not None and job.done == 2


def test_refresh_job_reads_sealed_from_the_locked_row(factory, settings):
    """A Job already loaded in the session is refreshed: a close committed elsewhere is seen."""
    with factory() as other:
        job = make_job(other, settings, {"a.jpg": b"1"}, sealed=False)
        job_id = job.id
        job.scans[0].status = "classified"
        other.commit()
    with factory() as session:
        assert session.get(Job, job_id).sealed is False  # now in this session's identity map
        with factory() as other:
            other.get(Job, job_id).sealed = True
            other.commit()
        job = refresh_job(session, job_id)
        assert job.sealed is True and job.status == "done"
        session.commit()


def test_register_is_idempotent_and_activation_retires_previous(factory, tiny_bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["seed"] = 8  # different manifest → different digest → a second version
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with factory() as session:
        first = register_bundle(session, tiny_bundle)
        assert register_bundle(session, tiny_bundle).id == first.id
        assert first.status == "candidate" and first.backbone_weights == "none"
        second = register_bundle(session, copy)
        assert second.id != first.id
        activate_version(session, first)
        activate_version(session, second)
        session.commit()
        assert active_version(session).id == second.id
        assert session.get(ModelVersion, first.id).status == "retired"
        assert session.scalar(select(func.count()).where(ModelVersion.status == "active")) == 1


def test_register_refuses_a_tampered_bundle(factory, tiny_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    (bad / "svm.joblib").write_bytes(b"tampered")
    with factory() as session, pytest.raises(BundleError):
        register_bundle(session, bad)


def test_without_active_version_the_job_waits_and_says_why(factory, settings):
    with factory() as session:
        job_id = make_job(session, settings, scan_files(good=2)).id
    dispatch_job(factory, job_id, settings)
    with factory() as session:
        job = session.get(Job, job_id)
        assert job.status == "queued" and job.status_detail == WAITING_FOR_MODEL
    assert queued_messages(settings.redis_url, "inference") == []


@pytest.mark.parametrize("batches_per_task, task_sizes", [(1, [4, 3]), (4, [7])])
def test_dispatch_enqueues_batches_then_waiting_jobs_start_on_activation(factory, settings, tiny_bundle,
                                                                         batches_per_task, task_sizes):
    settings = dataclasses.replace(settings, inference_batches_per_task=batches_per_task)
    with factory() as session:
        job_id = make_job(session, settings, scan_files(good=5)).id  # 7 scans with the 2 bad ones
    dispatch_job(factory, job_id, settings)
    with factory() as session:
        version = _version(session, tiny_bundle)
    assert dispatch_waiting_jobs(factory, settings) == 1
    messages = queued_messages(settings.redis_url, "inference")
    # A task holds up to INFERENCE_BATCH_SIZE (4) x INFERENCE_BATCHES_PER_TASK scans.
    assert [len(args[0]) for _, args in messages] == task_sizes
    assert {name for name, _ in messages} == {"tasks.classify_batch"}
    assert all(args[1] == version.id for _, args in messages)
    with factory() as session:
        ids = list(session.scalars(select(Scan.id).where(Scan.job_id == job_id).order_by(Scan.id)))
        assert sorted(i for _, args in messages for i in args[0]) == ids
        assert session.get(Job, job_id).status_detail == ""
    assert dispatch_waiting_jobs(factory, settings) == 0


def _sent_ids(settings) -> list[int]:
    return sorted(i for _, args in queued_messages(settings.redis_url, "inference") for i in args[0])


def test_broker_down_flags_the_job_and_the_sweeper_sends_it_once(factory, settings, tiny_bundle):
    """A send that fails leaves the job flagged; the sweeper re-sends flagged jobs only, once."""
    down = settings.replace(broker_url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    with factory() as session:
        _version(session, tiny_bundle)
        lost = make_job(session, settings, {"a.jpg": b"1", "b.jpg": b"2"}, sealed=False)
        lost_ids = [s.id for s in lost.scans]
        sent = make_job(session, settings, {"c.jpg": b"3"})
        sent_ids = [s.id for s in sent.scans]
    with pytest.raises(Exception):
        dispatch_job(factory, lost.id, down, scan_ids=lost_ids)
    with factory() as session:
        job = session.get(Job, lost.id)
        assert job.status == "queued" and job.status_detail == BROKER_UNREACHABLE
    dispatch_job(factory, sent.id, settings)
    assert _sent_ids(settings) == sent_ids
    # Still down: the sweep sends nothing and the flag stays.
    assert dispatch_waiting_jobs(factory, down) == 0
    with factory() as session:
        assert session.get(Job, lost.id).status_detail == BROKER_UNREACHABLE
    # Back up: the flagged job's scans go exactly once; the job sent normally is not re-sent.
    assert dispatch_waiting_jobs(factory, settings) == 1
    assert _sent_ids(settings) == sorted(sent_ids + lost_ids)
    with factory() as session:
        assert session.get(Job, lost.id).status_detail == ""
    assert dispatch_waiting_jobs(factory, settings) == 0
    assert _sent_ids(settings) == sorted(sent_ids + lost_ids)


def test_later_request_of_a_flagged_job_sends_the_earlier_scans_too(factory, settings, tiny_bundle):
    """An open job whose first request missed the broker: the next request's dispatch sends all."""
    down = settings.replace(broker_url="redis://127.0.0.1:1/0")
    with factory() as session:
        _version(session, tiny_bundle)
        job = make_job(session, settings, {"a.jpg": b"1", "b.jpg": b"2"}, sealed=False)
        first, second = [s.id for s in job.scans]
    with pytest.raises(Exception):
        dispatch_job(factory, job.id, down, scan_ids=[first])
    dispatch_job(factory, job.id, settings, scan_ids=[second])
    assert _sent_ids(settings) == [first, second]


def test_same_content_reuses_stored_predictions(factory, settings, tiny_bundle):
    files = scan_files(good=3)
    with factory() as session:
        version = _version(session, tiny_bundle)
        first = make_job(session, settings, files)
        donors = [s for s in first.scans if s.path == "study0/slice_000.jpg"]
        _classify_by_hand(session, donors[0], version.id)
        session.commit()
        second_id = make_job(session, settings, {"again/x.jpg": files["study0/slice_000.jpg"],
                                                 "new.png": files["study1/slice_001.png"]}).id
    dispatch_job(factory, second_id, settings)
    with factory() as session:
        job = session.get(Job, second_id)
        by_path = {s.path: s for s in job.scans}
        reused = by_path["again/x.jpg"]
        assert reused.status == "classified" and reused.reused and reused.model_version_id == version.id
        names = set(session.scalars(select(Prediction.model_name).where(Prediction.scan_id == reused.id)))
        assert names == set(MODELS)
        assert by_path["new.png"].status == "queued"
        assert (job.total, job.done, job.reused, job.status) == (2, 1, 1, "running")
    messages = queued_messages(settings.redis_url, "inference")
    assert [args[0] for _, args in messages] == [[by_path["new.png"].id]]


def test_dispatch_limited_to_new_scans(factory, settings, tiny_bundle):
    with factory() as session:
        _version(session, tiny_bundle)
        job = make_job(session, settings, scan_files(good=2), sealed=False)
        newest = job.scans[-1].id
    dispatch_job(factory, job.id, settings, scan_ids=[newest])
    assert [args[0] for _, args in queued_messages(settings.redis_url, "inference")] == [[newest]]


def test_prediction_insert_is_idempotent(factory, settings, tiny_bundle):
    with factory() as session:
        version = _version(session, tiny_bundle)
        scan = make_job(session, settings, {"a.jpg": b"x"}).scans[0]
        _classify_by_hand(session, scan, version.id)
        _classify_by_hand(session, scan, version.id)
        session.commit()
        assert session.scalar(select(func.count(Prediction.id))) == len(MODELS)
