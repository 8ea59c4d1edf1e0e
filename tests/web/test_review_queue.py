"""The review queue end to end: a real classify task stores needs_review from the bundle's rule, and the
results API, its CSV, the job results' study counts and the scan page show it."""
from __future__ import annotations

import csv
import io

import pytest

from tests.workers.jobdata import activate_bundle, good_paths, make_job, scan_files
from training.recalibrate import copy_bundle

TEMPERATURES = {"resnet50": 0.3, "vgg16": 0.2, "custom_cnn": 0.5, "svm": 2.0, "random_forest": 1.5}


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return {p: data for p, data in scan_files(good=8).items() if p in good_paths(scan_files(good=8))}


@pytest.fixture(scope="module")
def triage_bundle(tiny_bundle, tmp_path_factory, files):
    """The tiny bundle with temperatures and a review threshold that sends 3 to 5 of the 8 `files` to
    review by their calibrated ensemble confidence, and no agreement rule (min_agreement 0)."""
    from models.engine import InferenceEngine
    from training.decode import decode_bytes

    root = tmp_path_factory.mktemp("review-queue")
    calibration = {"method": "test", "temperatures": TEMPERATURES, "ensemble": {"temperature": 0.7}}
    calibrated = root / "calibrated"
    copy_bundle(tiny_bundle, calibrated, {"calibration": calibration})
    engine = InferenceEngine.from_bundle(calibrated, precision="float32")
    images = [decode_bytes(data, path, target_size=32)[0].image for path, data in files.items()]
    confidence = {path: max(r["ensemble"]["probabilities"].values())
                  for path, r in zip(files, engine.classify(images))}
    ranked = sorted(confidence.values(), reverse=True)
    # The threshold sits in the widest gap around the middle, far from batch-size rounding (~1e-4).
    k = max((3, 4, 5), key=lambda i: ranked[i - 1] - ranked[i])
    assert ranked[k - 1] - ranked[k] > 1e-3, "the synthetic scans need distinct confidences"
    threshold = (ranked[k - 1] + ranked[k]) / 2
    out = root / "triage"
    copy_bundle(calibrated, out, {"calibration": calibration,
                                  "triage": {"confidence_threshold": threshold, "min_agreement": 0}})
    return {"bundle": out, "review": {p for p, c in confidence.items() if c < threshold},
            "confidence": confidence}


def test_classify_stores_needs_review_and_the_api_filters_it(app, client, auth, session, files, triage_bundle):
    from tasks.classify import classify_scans

    state = app.extensions["mri"]
    version_id = activate_bundle(state.session_factory, triage_bundle["bundle"])
    job = make_job(session, state.settings, files)
    scan_ids = [s.id for s in job.scans]
    path_of = {s.id: s.path for s in job.scans}
    outcome = classify_scans(state.session_factory, state.settings, scan_ids, version_id)
    assert sorted(outcome.classified) == sorted(scan_ids)

    def rows(**params):
        response = client.get("/api/v1/results", query_string={"job": job.id, **params}, headers=auth("viewer"))
        assert response.status_code == 200, response.get_json()
        return response.get_json()["results"]

    flagged = {path_of[r["scan_id"]] for r in rows(needs_review="true")}
    accepted = {path_of[r["scan_id"]] for r in rows(needs_review="false")}
    assert flagged == triage_bundle["review"] and 3 <= len(flagged) <= 5
    assert accepted == set(files) - flagged
    # The stored confidence is the calibrated one the rule was applied to.
    for row in rows():
        assert row["confidence"] == pytest.approx(triage_bundle["confidence"][path_of[row["scan_id"]]], abs=1e-3)
        assert row["needs_review"] is (path_of[row["scan_id"]] in flagged)
    # Another model's rows carry (and filter on) the scan's flag too.
    svm = rows(model="svm", needs_review="true")
    assert {path_of[r["scan_id"]] for r in svm} == flagged and all(r["needs_review"] for r in svm)
    assert client.get("/api/v1/results", query_string={"needs_review": "maybe"},
                      headers=auth("viewer")).status_code == 400
    exported = client.get("/api/v1/results", query_string={"job": job.id, "format": "csv", "needs_review": "true"},
                          headers=auth("viewer")).get_data(as_text=True)
    table = list(csv.reader(io.StringIO(exported)))
    assert table[0][-1] == "needs_review" and {r[-1] for r in table[1:]} == {"1"} and len(table) == 1 + len(flagged)

    body = client.get(f"/api/v1/jobs/{job.id}/results", headers=auth("viewer")).get_json()
    per_study = {s["study"]: s["needs_review"] for s in body["studies"]}
    expected = {study: sum(1 for p in flagged if p.startswith(study + "/")) for study in per_study}
    assert per_study == expected and sum(per_study.values()) == len(flagged)
    assert sum(bool(s["ensemble"]["needs_review"]) for s in body["scans"]) == len(flagged)

    # A later upload of the same content reuses the stored predictions, flag included.
    from sqlalchemy import select

    from db.models import Scan
    from tasks.dispatch import reuse_predictions

    again = sorted(flagged)[0]
    job2 = make_job(session, state.settings, {"again/" + again: files[again]})
    with state.session_factory() as other:
        assert len(reuse_predictions(other, list(other.scalars(select(Scan).where(Scan.job_id == job2.id))),
                                     version_id)) == 1
        other.commit()
    assert [r["needs_review"] for r in rows(job=job2.id)] == [True]

    # The new parameter and fields are in the OpenAPI document (requests and answers validate).
    from test_openapi import Contract, RecordingClient

    contract, recording = Contract(app), RecordingClient(client)
    for query in (f"job={job.id}&needs_review=true", f"job={job.id}&needs_review=false&model=vgg16"):
        contract.check(recording.get(f"/api/v1/results?{query}", headers=auth("viewer")), 200)
    contract.check(recording.get(f"/api/v1/jobs/{job.id}/results", headers=auth("viewer")), 200)
    contract.check(recording.get(f"/api/v1/scans/{scan_ids[0]}", headers=auth("viewer")), 200)

    one = next(i for i in scan_ids if path_of[i] in flagged)
    other = next(i for i in scan_ids if path_of[i] not in flagged)
    page = client.get(f"/scans/{one}", headers=auth("viewer")).get_data(as_text=True)
    assert 'id="needs-review"' in page and "threshold" in page
    assert 'id="needs-review"' not in client.get(f"/scans/{other}", headers=auth("viewer")).get_data(as_text=True)


def test_scans_of_a_version_without_a_rule_match_neither_filter(client, auth, session, active_version):
    """Rows stored before 0006, or by a version whose bundle sets no rule, hold null (the engine's
    None for such a bundle is checked in tests/models/test_engine_calibration.py)."""
    from db.models import Job, Prediction, Scan

    job = Job(name="old", sealed=True, status="done")
    session.add(job)
    session.flush()
    for index, flag in enumerate((None, True, False)):
        scan = Scan(job_id=job.id, sha256=f"{index:064x}", path=f"{index}.png", status="classified",
                    model_version_id=active_version)
        session.add(scan)
        session.flush()
        session.add(Prediction(scan_id=scan.id, model_version_id=active_version, model_name="ensemble",
                               label="glioma", confidence=0.9, probabilities={"glioma": 0.9, "notumor": 0.1},
                               agreement=5, needs_review=flag))
    session.commit()

    def paths(**params):
        body = client.get("/api/v1/results", query_string={"job": job.id, **params}, headers=auth("viewer")).get_json()
        return {r["path"]: r["needs_review"] for r in body["results"]}

    assert paths() == {"0.png": None, "1.png": True, "2.png": False}
    assert paths(needs_review="true") == {"1.png": True} and paths(needs_review="false") == {"2.png": False}
