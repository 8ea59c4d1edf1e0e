"""The scan, training-runs and models pages through the Flask test client: who sees what, the picture
(PNG, DICOM window, only with a login), and the review round trip with the page's CSRF token."""
from __future__ import annotations

import io
import re
from datetime import datetime

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from db.models import ModelVersion, Prediction, Scan, TrainingRun, User
from tests.helpers.bad_inputs import dicom_bytes, ramp16
from web_helpers import png_bytes, upload_data

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
MODELS = ["resnet50", "vgg16", "custom_cnn", "svm", "random_forest"]


def _csrf(page: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


def _login(client, auth, role: str) -> str:
    """Log the test client in through the form with a token of `role`; return the session's CSRF token."""
    token = auth(role)["Authorization"].split()[1]
    form_token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True))
    assert client.post("/login", data={"csrf_token": form_token.group(1), "token": token}).status_code == 302
    return _csrf(client.get("/").get_data(as_text=True))


def _png(response) -> np.ndarray:
    assert response.status_code == 200 and response.mimetype == "image/png", response.get_data()[:200]
    return np.asarray(Image.open(io.BytesIO(response.get_data())))


def _upload(client, auth, files) -> list[int]:
    job_id = client.post("/api/v1/jobs", data=upload_data(files), headers=auth("uploader")).get_json()["id"]
    with client.application.extensions["mri"].session_factory() as s:
        return list(s.scalars(select(Scan.id).where(Scan.job_id == job_id).order_by(Scan.id)))


def _classify(session, scan_id: int, version_id: int, labels: list[str], ensemble: str) -> None:
    """Store predictions as a worker would: five models' labels and the ensemble with its agreement."""
    scan = session.get(Scan, scan_id)
    scan.status, scan.model_version_id = "classified", version_id
    for name, label in zip(MODELS, labels):
        session.add(Prediction(scan_id=scan_id, model_version_id=version_id, model_name=name, label=label,
                               confidence=0.7, probabilities={c: 0.7 if c == label else 0.1 for c in CLASSES}))
    probs = {"glioma": 0.62, "meningioma": 0.21, "notumor": 0.12, "pituitary": 0.05}
    session.add(Prediction(scan_id=scan_id, model_version_id=version_id, model_name="ensemble", label=ensemble,
                           confidence=probs[ensemble], probabilities=probs,
                           agreement=sum(label == ensemble for label in labels)))
    session.commit()


@pytest.fixture()
def three_scans(client, auth, session, active_version) -> list[int]:
    """One job of three uploaded PNGs; the middle one classified (3 of 5 models say glioma)."""
    ids = _upload(client, auth, [(f"study/s{i}.png", png_bytes(i, size=24)) for i in range(3)])
    _classify(session, ids[1], active_version, ["glioma", "glioma", "meningioma", "glioma", "notumor"], "glioma")
    return ids


def test_scan_page_shows_the_models_the_ensemble_and_its_neighbours(client, auth, three_scans, active_version):
    first, middle, last = three_scans
    page = client.get(f"/scans/{middle}", headers=auth("viewer")).get_data(as_text=True)
    assert '<strong class="label big" id="ensemble-label">glioma</strong>' in page and "62.0%" in page
    assert "3 of 5 models agree" in page and "custom_cnn, random_forest say otherwise" in page
    assert f'href="/models#version-{active_version}">#{active_version}</a>' in page
    assert f'rel="prev" id="previous-scan" href="/scans/{first}"' in page
    assert f'rel="next" id="next-scan" href="/scans/{last}"' in page and "scan 2 of 3" in page
    # one bar chart per model plus the ensemble's; the ensemble's glioma bar is 62 % long
    assert page.count('<dl class="bars">') == 6 and 'class="fill top" width="62.00"' in page
    assert f'src="/scans/{middle}/image"' in page and 'id="window-level"' in page
    assert 'id="review-form"' not in page and "Not reviewed yet" in page  # a viewer cannot review
    reviewer_page = client.get(f"/scans/{middle}", headers=auth("reviewer")).get_data(as_text=True)
    assert 'id="review-form"' in reviewer_page and '<option value="glioma" selected>' in reviewer_page
    edge = client.get(f"/scans/{first}", headers=auth("viewer")).get_data(as_text=True)
    assert 'rel="prev"' not in edge and "Not classified yet" in edge
    assert client.get("/scans/999999", headers=auth("viewer")).status_code == 404


def test_job_and_results_pages_link_to_scans(client, auth, three_scans):
    job_js = client.get("/static/job.js").get_data(as_text=True)
    assert "`/scans/${scan.id}`" in job_js
    results = client.get("/results", headers=auth("viewer")).get_data(as_text=True)
    assert f'href="/scans/{three_scans[1]}"' in results


def test_the_picture_is_served_only_with_a_login(client, auth, three_scans):
    url = f"/scans/{three_scans[0]}/image"
    anonymous = client.get(url)
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    assert not anonymous.get_data().startswith(b"\x89PNG")
    _login(client, auth, "viewer")
    shown = client.get(url)
    stored = np.asarray(Image.open(io.BytesIO(png_bytes(0, size=24))).convert("RGB"))
    assert np.array_equal(_png(shown), stored)  # the same pixels as uploaded
    assert shown.headers["Cache-Control"] == "private, no-cache"  # revalidated, so a logout is honoured
    again = client.get(url, headers={"If-None-Match": shown.headers["ETag"]})
    assert again.status_code == 304 and again.get_data() == b""
    client.post("/logout", data={"csrf_token": _csrf(client.get("/").get_data(as_text=True))})
    assert client.get(url, headers={"If-None-Match": shown.headers["ETag"]}).status_code == 302


def test_window_and_level_of_an_ordinary_image(client, auth, three_scans):
    url = f"/scans/{three_scans[0]}/image"
    original = _png(client.get(url, headers=auth("viewer"))).astype(int)
    narrow = _png(client.get(url + "?center=128&width=64", headers=auth("viewer"))).astype(int)
    expected = np.clip(np.rint((original - 96) * 255 / 64), 0, 255)
    assert np.array_equal(narrow, expected)
    for bad in ("?width=0", "?width=-3", "?center=nan", "?center=abc"):
        assert client.get(url + bad, headers=auth("viewer")).status_code == 400, bad


def test_a_dicom_is_shown_in_its_own_window_and_in_a_chosen_one(client, auth, session):
    ramp = ramp16(32)  # 0..4000
    data = dicom_bytes(ramp, WindowCenter=1000, WindowWidth=500)
    (scan_id,) = _upload(client, auth, [("mr/slice.dcm", data)])
    page = client.get(f"/scans/{scan_id}", headers=auth("viewer")).get_data(as_text=True)
    assert 'data-center="1000" data-window="500"' in page and 'max="4000"' in page and "DICOM" in page
    default = _png(client.get(f"/scans/{scan_id}/image", headers=auth("viewer"))).astype(int)
    values = ramp.astype(float)
    assert np.array_equal(default, np.rint(np.clip((values - 750) * 255 / 500, 0, 255)))
    wide = _png(client.get(f"/scans/{scan_id}/image?center=2000&width=4000", headers=auth("viewer"))).astype(int)
    # the chosen window reaches values the file's own window clipped to white
    assert np.array_equal(wide, np.rint(np.clip(values * 255 / 4000, 0, 255)))
    assert len(np.unique(wide[values > 1250])) > 100 and np.unique(default[values > 1250]).tolist() == [255]


def test_a_16_bit_png_is_windowed_in_its_own_sample_values(client, auth):
    import cv2

    from training.decode import decode_bytes

    ramp = ramp16(32)  # 12 bits used of 16, as scanners export them
    data = cv2.imencode(".png", ramp)[1].tobytes()
    (scan_id,) = _upload(client, auth, [("export/slice.png", data)])
    page = client.get(f"/scans/{scan_id}", headers=auth("viewer")).get_data(as_text=True)
    assert "PNG, 16-bit, 32 × 32 px" in page and 'max="4000"' in page
    default = _png(client.get(f"/scans/{scan_id}/image", headers=auth("viewer")))
    assert np.array_equal(default, decode_bytes(data)[0].image[..., 0])  # as the models saw it
    wide = _png(client.get(f"/scans/{scan_id}/image?center=2000&width=4000", headers=auth("viewer"))).astype(int)
    assert np.array_equal(wide, np.rint(np.clip(ramp.astype(float) * 255 / 4000, 0, 255)))


def test_a_missing_or_undecodable_file_says_why(client, auth, session, three_scans):
    client.post("/api/v1/jobs", data=upload_data([("notes.txt", b"not a scan")]), headers=auth("uploader"))
    broken = session.scalar(select(Scan.id).where(Scan.path == "notes.txt"))
    assert client.get(f"/scans/{broken}/image", headers=auth("viewer")).status_code == 422
    page = client.get(f"/scans/{broken}", headers=auth("viewer")).get_data(as_text=True)
    assert "The picture cannot be shown" in page and 'id="scan-image"' not in page
    from config.storage import blob_path

    lost = session.get(Scan, three_scans[0])
    blob_path(client.application.extensions["mri"].settings.uploads_dir, lost.sha256).unlink()
    assert client.get(f"/scans/{lost.id}/image", headers=auth("viewer")).status_code == 404
    assert "stored file of scan" in client.get(f"/scans/{lost.id}", headers=auth("viewer")).get_data(as_text=True)


def test_review_round_trip_through_the_page_with_its_csrf_token(client, auth, three_scans):
    scan_id = three_scans[1]
    _login(client, auth, "reviewer")
    page = client.get(f"/scans/{scan_id}").get_data(as_text=True)
    url = re.search(r'id="review-form" data-url="([^"]+)"', page).group(1)
    body = {"label": "meningioma", "note": "dural tail"}
    forged = client.post(url, json=body)
    assert forged.status_code == 400 and forged.get_json()["error"] == "csrf_failed"
    saved = client.post(url, json=body, headers={"X-CSRFToken": _csrf(page)})
    assert saved.status_code == 201
    page = client.get(f"/scans/{scan_id}").get_data(as_text=True)
    review = re.search(r'<p id="current-review">(.*?)</p>', page, re.S).group(1)
    assert "meningioma" in review and "reviewer-user" in review and "differs from the ensemble" in review
    assert "dural tail" in page and 'id="review-withdraw"' in page
    assert '<option value="meningioma" selected>' in page
    withdrawn = client.delete(url, headers={"X-CSRFToken": _csrf(page)})
    assert withdrawn.status_code == 200
    page = client.get(f"/scans/{scan_id}").get_data(as_text=True)
    assert "Not reviewed yet" in page and "History (1)" in page and 'id="review-withdraw"' not in page


def _runs(session) -> dict[str, int]:
    admin = session.scalar(select(User).where(User.name == "admin-user"))
    figures = {"per_model": {}, "per_class": {}, "confusion_matrix": [], "size": 541}
    runs = {
        "queued": TrainingRun(status="queued", user_id=admin.id if admin else None),
        "running": TrainingRun(status="running", stage="features", progress=0.42,
                               log="08:00:01 [start] training into /x\n08:00:09 [features] resnet50 features 120/541"),
        "promoted": TrainingRun(status="succeeded", stage="done", progress=1.0, decision={
            "promoted": True, "reason": "promoted over version 1 (within the tolerance)",
            "candidate": {"version": 2, "accuracy": 0.9002, "macro_f1": 0.8955, **figures},
            "active": {"version": 1, "accuracy": 0.9020, "macro_f1": 0.8972, **figures},
            "evaluation_size": 541, "tolerance": 0.005},
            data_summary={"folder_files": 5471, "reviewed_scans": 50, "overrides": 6, "train_pool": 4980,
                          "evaluation": 541}),
        "failed": TrainingRun(status="failed", error="RuntimeError: out of disk"),
    }
    session.add_all(runs.values())
    session.commit()
    return {name: run.id for name, run in runs.items()}


def test_training_runs_page_shows_progress_and_decisions(client, auth, session):
    auth("admin")  # the user who queued the first run
    ids = _runs(session)
    page = client.get("/training-runs", headers=auth("viewer")).get_data(as_text=True)
    running = re.search(rf'<article class="card run" id="run-{ids["running"]}".*?</article>', page, re.S).group(0)
    assert "features" in running and "42%" in running and 'value="0.42"' in running
    assert "resnet50 features 120/541" in running and 'data-url="/api/v1/training-runs/' in running
    queued = re.search(rf'<article class="card run" id="run-{ids["queued"]}".*?</article>', page, re.S).group(0)
    assert "by admin-user" in queued and f"queued behind run #{ids['running']}" in queued
    promoted = re.search(rf'id="run-{ids["promoted"]}".*?</article>', page, re.S).group(0)
    assert "promoted over version 1" in promoted and "0.9002" in promoted and "0.8972" in promoted
    assert "same 541 evaluation scans" in promoted and "5471 folder files" in promoted
    assert "50 reviewed scans" in promoted and "6 overriding a folder label" in promoted
    assert "out of disk" in page
    assert 'id="queue-form"' not in page  # only admins queue runs
    assert 'id="queue-form"' not in client.get("/training-runs", headers=auth("reviewer")).get_data(as_text=True)


def test_queue_a_run_through_the_page_as_an_admin(client, auth, session, broker):
    csrf = _login(client, auth, "admin")
    page = client.get("/training-runs").get_data(as_text=True)
    form = re.search(r'<form id="queue-form".*?</form>', page, re.S).group(0)
    assert {"epochs", "cnn_epochs", "image_size", "backbone_weights"} <= set(re.findall(r'name="(\w+)"', form))
    url = re.search(r'data-url="([^"]+)"', form).group(1)
    assert client.post(url, json={"params": {"epochs": 2}}).status_code == 400  # no CSRF token
    queued = client.post(url, json={"params": {"epochs": 2}}, headers={"X-CSRFToken": csrf})
    assert queued.status_code == 202
    page = client.get("/training-runs").get_data(as_text=True)
    assert f'id="run-{queued.get_json()["id"]}" data-status="queued"' in page and "epochs=2" in page


def _evaluated(session, digest: str, status: str, accuracy: float, matrix: list[list[int]], by=None) -> int:
    per_class = {c: {"precision": 0.9, "recall": accuracy, "f1": 0.8, "support": sum(row)}
                 for c, row in zip(CLASSES, matrix)}
    version = ModelVersion(digest=digest * 64, bundle_path=f"/b/{digest}", backbone_weights="none",
                           status=status, activated_by=by, activated=datetime(2026, 11, 29, 9, 30) if by else None,
                           manifest={"classes": CLASSES, "image_size": 64,
                                                                     "dataset": {"train": 90, "validation": 10}},
                           evaluation={"version": None, "size": 40, "accuracy": accuracy, "macro_f1": accuracy - 0.01,
                                       "per_class": per_class, "confusion_matrix": matrix, "run": 7,
                                       "at": "2026-11-29T08:00:00+00:00",
                                       "per_model": {"svm": {"accuracy": 0.5, "macro_f1": 0.4}}})
    session.add(version)
    session.commit()
    return version.id


def test_models_page_compares_each_version_with_the_active_one(client, auth, session):
    reviewer = auth("reviewer")
    by = session.scalar(select(User.id).where(User.name == "reviewer-user"))
    old = _evaluated(session, "1", "retired", 0.71, [[9, 1, 0, 0], [2, 8, 0, 0], [0, 0, 10, 0], [3, 0, 0, 7]])
    active = _evaluated(session, "2", "active", 0.85, [[10, 0, 0, 0], [1, 9, 0, 0], [0, 0, 10, 0], [1, 0, 0, 9]], by)
    candidate = _evaluated(session, "3", "candidate", 0.88, [[10, 0, 0, 0], [0, 10, 0, 0], [0, 0, 9, 1], [1, 0, 0, 9]])
    page = client.get("/models", headers=reviewer).get_data(as_text=True)
    card = re.search(rf'<article class="card version" id="version-{candidate}".*?</article>', page, re.S).group(0)
    assert f"Version #{candidate} (candidate)" in card and f"Active #{active}" in card
    assert card.count("<table class=\"confusion\">") == 2 and "0.8800" in card and "0.8500" in card
    assert '<td class="cm-5 diag">10</td>' in card and '<td class="cm-1">1</td>' in card
    assert "100 scans (90 train, 10 validation)" in card
    assert f'Activate #{candidate}</button>' in card
    retired = re.search(rf'id="version-{old}".*?</article>', page, re.S).group(0)
    assert f"Roll back to #{old}</button>" in retired and "0.7100" in retired
    active_card = re.search(rf'id="version-{active}".*?</article>', page, re.S).group(0)
    assert "2026-11-29 09:30 UTC</time> by reviewer-user" in active_card and 'class="activate"' not in active_card
    assert active_card.count('<table class="confusion">') == 1  # itself only
    assert 'class="activate"' not in client.get("/models", headers=auth("viewer")).get_data(as_text=True)


def test_every_page_names_a_favicon_and_favicon_ico_answers_without_a_login(client, auth):
    page = client.get("/login").get_data(as_text=True)
    link = re.search(r'<link rel="icon" type="image/svg\+xml" href="([^"]+)"', page)
    assert link, "base.html names no favicon"
    icon = client.get(link.group(1))
    assert icon.status_code == 200 and icon.mimetype == "image/svg+xml" and b"<svg" in icon.get_data()
    # browsers (and crawlers) still ask /favicon.ico: answered, not a 404 in every console
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response.headers["Location"].endswith(link.group(1))
    _login(client, auth, "viewer")
    assert link.group(1) in client.get("/training-runs").get_data(as_text=True)


def test_a_queued_run_with_none_running_waits_for_a_training_worker(client, auth, session):
    from db.models import TrainingRun

    session.add(TrainingRun(status="queued"))
    session.commit()
    page = client.get("/training-runs", headers=auth("viewer")).get_data(as_text=True)
    assert "waiting for a training worker" in page and "queued behind" not in page


def test_the_models_field_of_the_queue_form_fits_its_hint(client, auth, session):
    csrf = _login(client, auth, "admin")  # noqa: F841 - only admins see the form
    form = re.search(r'<form id="queue-form".*?</form>', client.get("/training-runs").get_data(as_text=True), re.S).group(0)
    field = re.search(r'<input name="models"[^>]*>', form, re.S).group(0)
    assert 'placeholder="all five models"' in field
    assert 'title="default: resnet50,vgg16,custom_cnn,svm,random_forest"' in field
