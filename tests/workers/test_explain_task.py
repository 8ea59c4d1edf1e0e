"""tasks.explain with the real tiny bundle, in process, on SQLite and PostgreSQL: the request queues the
task once, the task caches the overlay, failures are reported once and then tried again."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from db.models import ModelVersion
from tasks import explain, runtime
from tasks.classify import classify_scans
from tests.workers.jobdata import activate_bundle, make_job, queued_messages, scan_files


@pytest.fixture()
def worker_process(monkeypatch, settings):
    """This process as a worker of `settings` (runtime reads the settings and database from there)."""
    monkeypatch.setattr(runtime, "_settings", settings)
    monkeypatch.setattr(runtime, "_db", None)
    yield
    runtime.shutdown()


def _classified_scan(factory, settings, tiny_bundle) -> tuple[int, int]:
    version_id = activate_bundle(factory, tiny_bundle)
    with factory() as session:
        scan_id = make_job(session, settings, {"study/a.png": scan_files(good=2)["study1/slice_001.png"]}).scans[0].id
    outcome = classify_scans(factory, settings, [scan_id], version_id)
    assert outcome.classified == [scan_id]
    return scan_id, version_id


def test_request_queues_once_and_the_task_caches_the_overlay(factory, settings, tiny_bundle, redis_url,
                                                             worker_process):
    scan_id, version_id = _classified_scan(factory, settings, tiny_bundle)
    first = explain.request_explanation(settings, scan_id, version_id, "resnet50")
    again = explain.request_explanation(settings, scan_id, version_id, "resnet50")
    assert first.status == again.status == "queued"
    messages = queued_messages(redis_url, "inference")
    assert messages == [("tasks.explain_scan", [scan_id, version_id, "resnet50"])]  # once, on the inference queue

    assert explain.explain_scan(*messages[0][1]) == {"status": "ready"}  # what the worker runs
    path = settings.data_dir / "explanations" / str(version_id) / f"{scan_id}-resnet50.png"
    assert not path.with_name(f"{scan_id}-resnet50.pending").exists()
    overlay = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert overlay.shape == (48, 48, 3)  # the scan's own size, not the model's 32 px
    assert not (overlay[..., 0] == overlay[..., 2]).all()  # coloured: the gray scan with heat on it

    ready = explain.request_explanation(settings, scan_id, version_id, "resnet50")
    assert (ready.status, ready.path) == ("ready", path)
    assert len(queued_messages(redis_url, "inference")) == 1  # a cache hit queues nothing
    stamp = path.stat().st_mtime_ns
    assert explain.explain_scan(scan_id, version_id, "resnet50") == {"status": "ready"}  # a duplicate delivery
    assert path.stat().st_mtime_ns == stamp


def test_svm_is_explained_through_resnet50_for_the_class_it_predicted(factory, settings, tiny_bundle,
                                                                      worker_process):
    from models.explain import Explainer

    scan_id, version_id = _classified_scan(factory, settings, tiny_bundle)
    path = explain.explain_and_cache(factory, settings, scan_id, version_id, "svm")
    assert path.name == f"{scan_id}-svm.png" and path.is_file()
    with factory() as session:
        version = session.get(ModelVersion, version_id)
        explainer = explain._explainer(version, settings)
        assert isinstance(explainer, Explainer)
        # the active version is explained with the classify engine's own bundle: loaded once
        assert explainer.bundle is runtime.engine_for(version_id, version.bundle_path, settings).bundle
        # The engine reloaded (another version took its place meanwhile): no stale second copy is kept.
        runtime._engines.clear()
        reloaded = runtime.engine_for(version_id, version.bundle_path, settings).bundle
        assert explain._explainer(version, settings).bundle is reloaded


def test_a_failure_is_reported_once_then_tried_again(factory, settings, tiny_bundle, redis_url, worker_process):
    scan_id, version_id = _classified_scan(factory, settings, tiny_bundle)
    for blob in settings.uploads_dir.rglob("*"):
        if blob.is_file():
            blob.unlink()  # the stored file is gone
    assert explain.request_explanation(settings, scan_id, version_id, "custom_cnn").status == "queued"
    outcome = explain.explain_scan(scan_id, version_id, "custom_cnn")
    assert outcome["status"] == "failed" and "stored file" in outcome["detail"]
    failed = explain.request_explanation(settings, scan_id, version_id, "custom_cnn")
    assert failed.status == "failed" and "stored file" in failed.detail
    assert explain.request_explanation(settings, scan_id, version_id, "custom_cnn").status == "queued"
    assert len(queued_messages(redis_url, "inference")) == 2  # the first request and the retry


def test_a_retired_version_is_explained_without_replacing_the_workers_engine(factory, settings, tiny_bundle,
                                                                             worker_process):
    scan_id, version_id = _classified_scan(factory, settings, tiny_bundle)
    with factory() as session:
        session.get(ModelVersion, version_id).status = "retired"
        session.commit()
    runtime._engines.clear()
    explain._explainers.clear()
    assert explain.explain_and_cache(factory, settings, scan_id, version_id, "vgg16").is_file()
    assert runtime._engines == {}  # the bundle was loaded for the explanation alone


def test_a_stale_pending_request_is_sent_again(factory, settings, redis_url):
    path = explain.explanation_path(settings, 3, 7, "vgg16")
    assert explain.request_explanation(settings, 7, 3, "vgg16").status == "queued"
    assert explain.request_explanation(settings, 7, 3, "vgg16").status == "queued"
    assert len(queued_messages(redis_url, "inference")) == 1
    marker = path.with_name("7-vgg16.pending")
    old = marker.stat().st_mtime - explain.PENDING_STALE_S - 1
    import os

    os.utime(marker, (old, old))  # its message was lost long ago
    assert explain.request_explanation(settings, 7, 3, "vgg16").status == "queued"
    assert len(queued_messages(redis_url, "inference")) == 2
