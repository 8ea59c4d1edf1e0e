"""Model versions (list, activate, roll back, waiting jobs start) and training runs."""
from __future__ import annotations

from sqlalchemy import select

from db.models import Job, ModelVersion, TrainingRun
from web_helpers import png_bytes, queued_messages, upload_data


def _version(session, digest: str, status: str = "candidate") -> int:
    version = ModelVersion(digest=digest * 64, bundle_path=f"/b/{digest}", backbone_weights="imagenet",
                           backbone_sha256="c" * 64, status=status,
                           manifest={"classes": ["glioma", "notumor"], "image_size": 224,
                                     "backbone_weights": {"mode": "imagenet", "path": "/w.h5", "sha256": "c" * 64}},
                           metrics={"ensemble": {"accuracy": 0.93}, "svm": {"accuracy": 0.9}})
    session.add(version)
    session.commit()
    return version.id


def test_list_models_shape(client, auth, session):
    first, second = _version(session, "1", "active"), _version(session, "2")
    body = client.get("/api/v1/models", headers=auth("viewer")).get_json()
    assert body["active"] == first and [m["id"] for m in body["models"]] == [second, first]
    model = body["models"][1]
    assert set(model) >= {"id", "status", "digest", "created", "activated", "classes", "image_size",
                          "backbone_weights", "metrics"}
    assert model["backbone_weights"] == {"mode": "imagenet", "sha256": "c" * 64, "path": "/w.h5"}
    assert model["metrics"]["ensemble"]["accuracy"] == 0.93


def test_activate_retires_previous_and_starts_waiting_jobs(client, auth, session, broker):
    old, new = _version(session, "1", "active"), _version(session, "2")
    # A job that arrived while nothing was active waits with a reason...
    session.execute(select(ModelVersion).where(ModelVersion.id == old)).scalar_one().status = "retired"
    session.commit()
    job_id = client.post("/api/v1/jobs", data=upload_data([(f"s/{i}.png", png_bytes(i)) for i in range(5)]),
                         headers=auth("uploader")).get_json()["id"]
    assert "no active model version" in client.get(f"/api/v1/jobs/{job_id}", headers=auth("viewer")).get_json()["detail"]
    assert queued_messages(broker, "inference") == []
    # ...and starts when a reviewer activates a version.
    response = client.post(f"/api/v1/models/{new}/activate", headers=auth("reviewer"))
    assert response.status_code == 200
    body = response.get_json()
    assert body["model"]["status"] == "active" and body["dispatched_jobs"] == 1
    messages = queued_messages(broker, "inference")
    assert [len(m["args"][0]) for m in messages] == [4, 1] and {m["args"][1] for m in messages} == {new}
    assert client.get(f"/api/v1/jobs/{job_id}", headers=auth("viewer")).get_json()["detail"] == ""
    # roll back: the old one is active again, the new one retired
    client.post(f"/api/v1/models/{old}/activate", headers=auth("reviewer"))
    session.expire_all()
    assert {v.id: v.status for v in session.execute(select(ModelVersion)).scalars()} == {old: "active", new: "retired"}


def test_models_page_shows_backbone_weights_and_activate_buttons(client, auth, session):
    _version(session, "1", "active")
    _version(session, "2")
    page = client.get("/models", headers=auth("reviewer")).get_data(as_text=True)
    assert "imagenet" in page and "ensemble 0.930" in page and page.count('class="activate"') == 1
    viewer_page = client.get("/models", headers=auth("viewer")).get_data(as_text=True)
    assert 'class="activate"' not in viewer_page


def test_training_run_enqueue_and_progress(client, auth, session, broker):
    response = client.post("/api/v1/training-runs", json={"params": {"epochs": 2, "image_size": 64}},
                           headers=auth("admin"))
    assert response.status_code == 202
    body = response.get_json()
    run = session.get(TrainingRun, body["id"])
    assert run.status == "queued" and run.params == {"epochs": 2, "image_size": 64} and run.trigger == "manual"
    assert queued_messages(broker, "training") == [{"task": "tasks.train_model", "args": [run.id], "kwargs": {}}]
    session.refresh(run)
    assert run.dispatched_at is not None, "marked as sent, so the sweeper does not send it again"
    progress = client.get(body["status_url"], headers=auth("viewer")).get_json()
    assert set(progress) >= {"id", "status", "stage", "progress", "error", "model_version", "created", "finished"}
    assert client.get("/api/v1/training-runs/999", headers=auth("viewer")).status_code == 404


def test_training_run_params_are_validated(client, auth):
    response = client.post("/api/v1/training-runs", json={"params": ["x"]}, headers=auth("admin"))
    assert response.status_code == 422
    response = client.post("/api/v1/training-runs", data="{broken", content_type="application/json",
                           headers=auth("admin"))
    assert response.status_code == 400


def test_jobs_list_page(client, auth, session):
    client.post("/api/v1/jobs", data=upload_data([("st/a.png", png_bytes())]), headers=auth("uploader"))
    job = session.execute(select(Job)).scalar_one()
    page = client.get("/", headers=auth("viewer")).get_data(as_text=True)
    assert f"/jobs/{job.id}" in page
    status_page = client.get(f"/jobs/{job.id}", headers=auth("viewer")).get_data(as_text=True)
    assert f'data-status-url="/api/v1/jobs/{job.id}"' in status_page
    assert client.get("/jobs/999", headers=auth("viewer")).status_code == 404


def test_training_run_queued_while_the_broker_is_down_is_kept_for_the_sweeper(tmp_path, migrated_sqlite):
    """The run is committed and answered 202; unsent, it waits for the sweeper (no 500)."""
    import shutil

    from web_helpers import build_app

    shutil.copy(migrated_sqlite, tmp_path / "down.db")
    app = build_app(tmp_path, f"sqlite:///{tmp_path / 'down.db'}", redis_url="redis://127.0.0.1:1/0")
    from web.auth import get_or_create_user, issue_token

    with app.extensions["mri"].session_factory() as s:
        token = issue_token(s, get_or_create_user(s, "boss", "admin"))
        s.commit()
    response = app.test_client().post("/api/v1/training-runs", json={}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 202, response.get_json()
    with app.extensions["mri"].session_factory() as s:
        run = s.get(TrainingRun, response.get_json()["id"])
        assert run.status == "queued" and run.dispatched_at is None
    app.extensions["mri"].engine.dispose()


def test_a_job_waiting_for_the_first_model_names_the_run_under_way(client, auth, session, broker):
    job_id = client.post("/api/v1/jobs", data=upload_data([("s/0.png", png_bytes(0))]),
                         headers=auth("uploader")).get_json()["id"]
    # nothing under way: register a bundle or start a run, on the job and on the models page
    assert "Register one" in client.get(f"/api/v1/jobs/{job_id}", headers=auth("viewer")).get_json()["detail"]
    assert "register-model" in client.get("/models", headers=auth("viewer")).get_data(as_text=True)
    queued, running = TrainingRun(status="queued"), TrainingRun(status="running", stage="heads", progress=0.41)
    session.add_all([queued, running])
    session.commit()
    detail = client.get(f"/api/v1/jobs/{job_id}", headers=auth("viewer")).get_json()["detail"]
    assert detail.startswith(f"Waiting for the first model: training run #{running.id} is running (41%)")
    assert "Register one" not in detail
    page = client.get(f"/jobs/{job_id}", headers=auth("viewer")).get_data(as_text=True)
    assert f"training run #{running.id} is running (41%)" in page
    assert '<p id="job-training-link" ><a href="/training-runs">' in page
    models = client.get("/models", headers=auth("viewer")).get_data(as_text=True)
    assert f"Waiting for the first model: training run #{running.id} is running (41%)" in models
    assert "register-model" not in models and 'href="/training-runs"' in models
    running.status = "failed"
    session.commit()
    detail = client.get(f"/api/v1/jobs/{job_id}", headers=auth("viewer")).get_json()["detail"]
    assert f"training run #{queued.id} is queued" in detail


def test_a_quick_model_and_its_calibration_are_named_in_the_api_and_on_the_page(client, auth, session):
    version = ModelVersion(
        digest="q" * 64, bundle_path="/b/q", backbone_weights="none", status="active",
        manifest={"classes": ["glioma", "notumor"], "image_size": 64, "profile": "quick",
                  "notes": "quick first model (64 px)",
                  "calibration": {"temperatures": {"custom_cnn": 1.7, "svm": 0.8}, "ensemble": {"temperature": 1.25}},
                  "triage": {"target_accuracy": 0.995, "confidence_threshold": 0.973, "min_agreement": 4,
                             "target_reached": True, "validation": {"coverage": 0.81, "accepted_accuracy": 0.996}}})
    plain = ModelVersion(digest="p" * 64, bundle_path="/b/p", backbone_weights="none", status="retired",
                         manifest={"classes": ["glioma", "notumor"], "image_size": 128})
    session.add_all([version, plain])
    session.commit()
    models = {m["id"]: m for m in client.get("/api/v1/models", headers=auth("viewer")).get_json()["models"]}
    quick, full = models[version.id], models[plain.id]
    assert quick["profile"] == "quick" and quick["notes"].startswith("quick first model")
    assert quick["calibration"] == {"temperatures": {"custom_cnn": 1.7, "svm": 0.8}, "ensemble_temperature": 1.25}
    assert quick["triage"]["confidence_threshold"] == 0.973 and quick["triage"]["validation_coverage"] == 0.81
    assert full["profile"] == "full" and full["calibration"] is None and full["triage"] is None
    page = client.get("/models", headers=auth("viewer")).get_data(as_text=True)
    card = page.split(f'id="version-{version.id}"')[1].split("</article>")[0]
    assert "quick first model" in card and "0.973" in card and "81.0 % accepted" in card and "1.25" in card
    assert "fewer than 4 models agree" in card
    # A rule chosen on validation may need one model, or none, to give the ensemble's label.
    for rule, words in ((1, "or no model gives the ensemble's label"), (0, None)):
        version.manifest = {**version.manifest, "triage": {**version.manifest["triage"], "min_agreement": rule}}
        session.commit()
        page = client.get("/models", headers=auth("viewer")).get_data(as_text=True)
        card = page.split(f'id="version-{version.id}"')[1].split("</article>")[0]
        assert "models agree" not in card and (words is None or words in card) and "0.973" in card
        assert words is not None or "no model gives" not in card
    other = page.split(f'id="version-{plain.id}"')[1].split("</article>")[0]
    assert "quick first model" not in other and "not calibrated" in other
