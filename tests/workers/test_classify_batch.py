"""classify_scans with the real tiny five-model engine, in process, on SQLite and PostgreSQL."""
from __future__ import annotations

import dataclasses
import shutil
import time

import pytest
from sqlalchemy import func, select

from db.models import Job, Prediction, Scan
from tasks import runtime
from tasks.classify import ModelLoadError, classify_scans, give_up_if_exhausted
from tasks.versions import activate_version, register_bundle
from tests.workers.jobdata import good_paths, make_job, scan_files

MODELS = {"resnet50", "vgg16", "custom_cnn", "svm", "random_forest", "ensemble"}


def _setup(factory, settings, tiny_bundle, files):
    with factory() as session:
        version = register_bundle(session, tiny_bundle)
        activate_version(session, version)
        session.commit()
        job = make_job(session, settings, files)
        return version.id, job.id, [s.id for s in job.scans]


def test_batch_classifies_good_scans_and_fails_bad_ones(factory, settings, tiny_bundle):
    files = scan_files(good=3)
    version_id, job_id, scan_ids = _setup(factory, settings, tiny_bundle, files)
    outcome = classify_scans(factory, settings, scan_ids, version_id)
    assert len(outcome.classified) == 3 and len(outcome.failed) == 2
    with factory() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.total, job.done, job.failed) == ("done", 5, 3, 2)
        for scan in job.scans:
            names = {p.model_name: p for p in scan.predictions}
            if scan.path in good_paths(files):
                assert scan.status == "classified" and scan.error == "" and scan.attempts == 1
                assert set(names) == MODELS
                ensemble = names["ensemble"]
                assert 0 <= ensemble.agreement <= 5
                assert abs(sum(ensemble.probabilities.values()) - 1) < 1e-4
                assert ensemble.confidence == max(ensemble.probabilities.values())
                assert ensemble.latency_ms > 0
            else:
                assert scan.status == "failed" and scan.error and not names
        reasons = {s.path: s.error for s in job.scans if s.status == "failed"}
        assert "truncated" in reasons["bad/truncated.jpg"].lower()
    # A duplicate delivery of the same batch changes nothing.
    again = classify_scans(factory, settings, scan_ids, version_id)
    assert again.classified == [] and sorted(again.skipped) == sorted(scan_ids)
    with factory() as session:
        assert session.scalar(select(func.count(Prediction.id))) == 3 * len(MODELS)


def test_results_match_the_engine(factory, settings, tiny_bundle):
    """Stored labels and probabilities are the engine's own for the same decoded image."""
    from training.decode import decode_bytes

    files = {"one.png": scan_files(good=2)["study1/slice_001.png"]}
    version_id, _, scan_ids = _setup(factory, settings, tiny_bundle, files)
    classify_scans(factory, settings, scan_ids, version_id)
    engine = runtime.engine_for(version_id, str(tiny_bundle), settings)
    expected = engine.classify([decode_bytes(files["one.png"], "one.png", target_size=32)[0].image])[0]
    with factory() as session:
        stored = {p.model_name: p for p in session.scalars(select(Prediction))}
    for name, entry in expected["predictions"].items():
        assert stored[name].label == entry["label"]
        for cls, p in entry["probabilities"].items():
            assert abs(stored[name].probabilities[cls] - p) < 1e-3
    assert stored["ensemble"].agreement == expected["ensemble"]["agreement"]


def test_scan_over_attempt_limit_fails_instead_of_looping(factory, settings, tiny_bundle):
    version_id, job_id, scan_ids = _setup(factory, settings, tiny_bundle, {"a.png": scan_files(2)["study1/slice_001.png"]})
    with factory() as session:
        session.get(Scan, scan_ids[0]).attempts = settings.max_scan_attempts
        session.commit()
    outcome = classify_scans(factory, settings, scan_ids, version_id)
    assert list(outcome.failed) == scan_ids
    with factory() as session:
        scan = session.get(Scan, scan_ids[0])
        assert scan.status == "failed" and "gave up after 3 attempt" in scan.error
        assert session.get(Job, job_id).status == "done"


def test_missing_blob_is_a_failed_scan(factory, settings, tiny_bundle):
    version_id, _, scan_ids = _setup(factory, settings, tiny_bundle, {"gone.jpg": b"\xff\xd8\xffgone"})
    for blob in settings.uploads_dir.rglob("*"):
        if blob.is_file():
            blob.unlink()
    classify_scans(factory, settings, scan_ids, version_id)
    with factory() as session:
        assert "missing" in session.get(Scan, scan_ids[0]).error


def test_worker_reads_blobs_where_the_web_stores_them(factory, settings, tiny_bundle, tmp_path):
    """The web's BlobStager and the worker share one layout; a corrupt digest fails only its scan."""
    import io

    from web.blobs import BlobStager

    data = scan_files(2)["study1/slice_001.png"]
    stager = BlobStager(uploads_dir=settings.uploads_dir, tmp_root=tmp_path / "stage")
    sha = stager.add(io.BytesIO(data)).sha256
    stager.commit()
    with factory() as session:
        version = register_bundle(session, tiny_bundle)
        activate_version(session, version)
        job = Job(source="test", name="layout", sealed=True)
        session.add(job)
        session.flush()
        good = Scan(job_id=job.id, sha256=sha, frame=0, path="good.png")
        bad = Scan(job_id=job.id, sha256="../" + sha[3:], frame=0, path="bad.png")
        session.add_all([good, bad])
        session.commit()
        version_id, ids = version.id, [good.id, bad.id]
    outcome = classify_scans(factory, settings, ids, version_id)
    assert outcome.classified == [ids[0]] and list(outcome.failed) == [ids[1]]
    assert "invalid" in outcome.failed[ids[1]]


def test_unloadable_version_is_retried_then_fails_its_scans_with_a_reason(factory, settings, tiny_bundle,
                                                                          tmp_path):
    """A tampered bundle: each try raises; once the attempts are used the scans fail and the job is done."""
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    files = {"a.png": scan_files(2)["study1/slice_001.png"], "b.jpg": scan_files(2)["study0/slice_000.jpg"]}
    version_id, job_id, scan_ids = _setup(factory, settings, broken, files)
    (broken / "svm.joblib").write_bytes(b"tampered after registration")
    for attempt in range(1, settings.max_scan_attempts + 1):
        with pytest.raises(ModelLoadError, match=f"model version {version_id} could not be loaded") as caught:
            classify_scans(factory, settings, scan_ids, version_id)
        verdict = give_up_if_exhausted(factory, settings, scan_ids, caught.value)
        if attempt < settings.max_scan_attempts:
            assert verdict is None, "scans with attempts left are retried"
            with factory() as session:
                assert session.get(Job, job_id).status == "running"
    assert verdict == 2
    with factory() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.done, job.failed) == ("done", 0, 2) and job.finished is not None
        for scan in job.scans:
            assert scan.status == "failed" and scan.attempts == settings.max_scan_attempts
            assert scan.error.startswith(f"model version {version_id} could not be loaded")
            assert "svm.joblib" in scan.error


def test_a_task_runs_engine_batches_pipelined(factory, settings, tiny_bundle, monkeypatch):
    """9 scans at batch size 2: five engine batches; the next batches decode while one computes
    and each batch is stored as it ends, so a task's progress shows batch by batch."""
    import tasks.classify as classify

    settings = dataclasses.replace(settings, inference_batch_size=2)
    every = scan_files(good=9, seed=3)
    files = {path: every[path] for path in sorted(good_paths(every))}
    assert len(files) == 9
    version_id, job_id, scan_ids = _setup(factory, settings, tiny_bundle, files)
    started: list[str] = []
    real_decode = classify._decode

    def recording_decode(conf, sha, path, size):
        started.append(path)
        return real_decode(conf, sha, path, size)

    monkeypatch.setattr(classify, "_decode", recording_decode)
    with factory() as session:
        order = [s.path for s in session.scalars(select(Scan).where(Scan.id.in_(scan_ids)).order_by(Scan.id))]
    calls: list[tuple[int, set[str], int]] = []

    def decoding_when_batch_starts(k: int) -> set[str]:
        # Files submitted before batch k computes start within moments (4 decode threads);
        # files not yet submitted cannot start until this call returns, so waiting is safe.
        wanted, deadline = set(order[2 * k: 2 * k + 6]), time.monotonic() + 5
        while not wanted <= set(started) and time.monotonic() < deadline:
            time.sleep(0.01)
        return set(started)

    def loader(version, path, conf):
        engine = runtime.engine_for(version, path, conf)

        class Watching:
            def classify(self, images):
                with factory() as session:
                    stored = session.scalar(select(func.count(Scan.id)).where(
                        Scan.job_id == job_id, Scan.status == "classified"))
                calls.append((len(images), decoding_when_batch_starts(len(calls)), stored))
                return engine.classify(images)

        return Watching()

    outcome = classify_scans(factory, settings, scan_ids, version_id, engine_loader=loader)
    assert sorted(outcome.classified) == sorted(scan_ids)
    assert [size for size, _, _ in calls] == [2, 2, 2, 2, 1]
    # While batch k computes, batches k+1 and k+2 are already decoding.
    for k, (_, decoding, _) in enumerate(calls):
        assert set(order[2 * k: 2 * k + 6]) <= decoding, k
    # Batches 0-2 are in the database before the last one computes (batch 3 may be writing).
    assert calls[-1][2] >= 6
    with factory() as session:
        assert session.get(Job, job_id).done == 9


def test_an_image_past_max_image_pixels_fails_its_scan_before_decoding(factory, settings, tiny_bundle):
    """MAX_IMAGE_PIXELS reaches the worker's decoder: scans declaring more pixels fail with the
    declared size and the limit, and the job finishes."""
    files = {path: data for path, data in scan_files(good=2).items() if not path.startswith("bad/")}
    version_id, job_id, scan_ids = _setup(factory, settings, tiny_bundle, files)
    small = dataclasses.replace(settings, max_image_pixels=48 * 48 - 1)  # the scans are 48 x 48
    outcome = classify_scans(factory, small, scan_ids, version_id)
    assert outcome.classified == [] and len(outcome.failed) == 2
    assert all("over the limit of 2,303 pixels" in reason for reason in outcome.failed.values())
    with factory() as session:
        assert session.get(Job, job_id).status == "done"
