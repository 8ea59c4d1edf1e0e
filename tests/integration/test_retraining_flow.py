"""Retraining that learns from reviewers, through the HTTP API with a real worker on PostgreSQL:
review scans, queue a run, read its decision on the evaluation split, roll back."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from tasks.versions import activate_version, register_bundle
from tests.helpers.split_data import split_png, write_split_folder
from tests.integration.worker_process import wait_for
from training.pool import in_evaluation_split
from training.recipe import DATASET_LIST, read_dataset_list

pytestmark = pytest.mark.integration
# A real run kept small: 32 px, one epoch of the custom CNN, random backbones.
PARAMS = {"models": "custom_cnn", "epochs": 1, "cnn_epochs": 1, "image_size": 32, "batch_size": 16,
          "backbone_weights": "none", "val_fraction": 0.25}


@pytest.fixture()
def api(service, tiny_bundle):
    """(test client, {role: auth headers}, id of the active tiny version) on the integration database."""
    from web import create_app
    from web.auth import get_or_create_user, issue_token

    settings, factory = service
    with factory() as session:
        version = activate_version(session, register_bundle(session, tiny_bundle))
        session.commit()
        version_id = version.id
    app = create_app({"env": "test", "database_url": settings.database_url, "redis_url": settings.redis_url,
                      "broker_key_prefix": settings.broker_key_prefix, "data_dir": settings.data_dir,
                      "inference_batch_size": settings.inference_batch_size, "log_level": "WARNING"})
    headers = {}
    with factory() as session:
        for role in ("admin", "reviewer"):
            headers[role] = {"Authorization": f"Bearer {issue_token(session, get_or_create_user(session, role, role))}"}
        session.commit()
    yield app.test_client(), headers, version_id
    app.extensions["mri"].engine.dispose()


def _upload(client, headers, files: dict[str, bytes], worker) -> list[dict]:
    form = {"files": [(io.BytesIO(data), path.rsplit("/", 1)[-1]) for path, data in files.items()],
            "paths": list(files)}
    response = client.post("/api/v1/jobs", data=form, headers=headers, content_type="multipart/form-data")
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["id"]

    def done() -> bool:
        return client.get(f"/api/v1/jobs/{job_id}", headers=headers).get_json()["status"] == "done"

    wait_for(done, 180, f"job {job_id}", worker)
    return client.get(f"/api/v1/jobs/{job_id}/results", headers=headers).get_json()["scans"]


def test_reviewed_scans_train_a_candidate_the_gate_compares_on_the_evaluation_split(api, start_worker, tmp_path):
    client, headers, tiny_id = api
    folder = write_split_folder(tmp_path / "labelled", train_per_class=6, evaluation_per_class=1)
    in_folder = (folder / "glioma" / "000.png").read_bytes()
    held_out, _ = split_png(2, evaluation=True, seed=90_000)
    new, _ = split_png(1, evaluation=False, seed=91_000)
    # Any candidate passes (the gate both ways is tests/workers/test_gate.py), so the rollback below is certain.
    worker = start_worker(TRAINING_DATA_DIR=str(folder), PROMOTION_TOLERANCE="1.0")
    scans = _upload(client, headers["admin"], {"s/in_folder.png": in_folder, "s/held_out.png": held_out,
                                               "s/new.png": new}, worker)
    scan = {s["path"]: s for s in scans}
    assert all(s["status"] == "classified" and s["model_version"] == tiny_id for s in scans)

    # Reviewers label three scans; one corrects a folder label for the same bytes.
    for path, label in (("s/in_folder.png", "pituitary"), ("s/held_out.png", "notumor"), ("s/new.png", "meningioma")):
        response = client.post(f"/api/v1/scans/{scan[path]['id']}/review", json={"label": label},
                               headers=headers["reviewer"])
        assert response.status_code == 201, response.get_json()
    reviewed = client.get("/api/v1/results?reviewed=true", headers=headers["reviewer"]).get_json()
    assert reviewed["total"] == 3 and {r["reviewed_by"] for r in reviewed["results"]} == {"reviewer"}

    response = client.post("/api/v1/training-runs", json={"params": PARAMS}, headers=headers["admin"])
    assert response.status_code == 202, response.get_json()
    status_url = response.get_json()["status_url"]
    run: dict = {}

    def finished() -> bool:
        run.update(client.get(status_url, headers=headers["reviewer"]).get_json())
        return run["status"] in ("succeeded", "failed")

    wait_for(finished, 300, "the training run", worker)
    assert run["status"] == "succeeded", f"{run['error']}\n{run['log']}"
    summary = run["data_summary"]
    assert (summary["folder_listed"], summary["folder_files"], summary["reviewed_scans"], summary["overrides"],
            summary["relabelled"]) == (28, 27, 3, 1, 1)
    assert (summary["train_pool"], summary["evaluation"], summary["evaluation_reviewed"]) == (25, 5, 1)
    decision = run["decision"]
    candidate_id = run["model_version"]
    assert decision["promoted"] is True and decision["reason"].startswith(f"promoted over version {tiny_id}")
    assert decision["evaluation_size"] == 5 and decision["tolerance"] == 1.0
    assert decision["candidate"]["version"] == candidate_id and decision["active"]["version"] == tiny_id
    for side in ("candidate", "active"):
        assert 0.0 <= decision[side]["accuracy"] <= 1.0 and 0.0 <= decision[side]["macro_f1"] <= 1.0
        assert decision[side]["size"] == 5

    models = {m["id"]: m for m in client.get("/api/v1/models", headers=headers["reviewer"]).get_json()["models"]}
    new_version, old_version = models[candidate_id], models[tiny_id]
    assert (new_version["status"], new_version["activated_by"], old_version["status"]) == ("active", None, "retired")
    assert new_version["evaluation"]["accuracy"] == decision["candidate"]["accuracy"]
    assert old_version["evaluation"]["accuracy"] == decision["active"]["accuracy"]
    # Pool items whose picture is a near copy of an evaluation scan are not trained on (issue 13).
    dropped = new_version["training_data"]["near_copies_of_evaluation_dropped"]
    assert new_version["training_data"]["size"] + dropped == 25 and new_version["training_data"]["reviewed_scans"] == 3
    assert new_version["backbone_weights"]["mode"] == "none" and new_version["training_run"] == run["id"]

    # What the candidate trained on: the reviewed label over the folder's, nothing of the evaluation split.
    listed = read_dataset_list(Path(new_version["bundle_path"]) / DATASET_LIST)
    trained = [row for row in listed if row["split"] in ("train", "validation")]
    assert len(listed) - len(trained) == 5  # the evaluation split, listed as the test part
    labels = {row["sha256"]: row["label"] for row in trained}
    assert len(trained) + dropped == 25 and labels[hashlib.sha256(in_folder).hexdigest()] == "pituitary"
    assert labels[hashlib.sha256(new).hexdigest()] == "meningioma"
    assert not [sha for sha in labels if in_evaluation_split(sha)]

    # Roll back: a reviewer activates the old version, and new predictions carry it.
    response = client.post(f"/api/v1/models/{tiny_id}/activate", headers=headers["reviewer"])
    assert response.status_code == 200 and response.get_json()["model"]["activated_by"] == "reviewer"
    again = _upload(client, headers["admin"], {"t/new.png": split_png(0, evaluation=False, seed=92_000)[0]}, worker)
    assert [s["model_version"] for s in again] == [tiny_id]
