"""Fields a route does not read are refused with 422 naming them; malformed bodies stay 400/415;
the one server-side path the API takes (a run's backbone_weights) stays inside its folders."""
from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select

from db.models import Job, TrainingRun
from web_helpers import png_bytes, queued_messages, upload_data


def unknown_fields(response, *names: str) -> str:
    assert response.status_code == 422, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == "unknown_fields"
    for name in names:
        assert name in body["detail"]
    return body["detail"]


def test_training_fields_outside_params_are_refused_and_nothing_is_queued(client, auth, session, broker):
    response = client.post("/api/v1/training-runs", json={"epochs": 1, "backbone_weights": "none"},
                           headers=auth("admin"))
    assert "allowed: params" in unknown_fields(response, "epochs", "backbone_weights")
    assert session.scalar(select(func.count(TrainingRun.id))) == 0
    assert queued_messages(broker, "training") == []


def test_unknown_training_params_are_refused_at_request_time(client, auth, session):
    response = client.post("/api/v1/training-runs", json={"params": {"epoch": 1, "image_size": 64}},
                           headers=auth("admin"))
    detail = unknown_fields(response, "epoch")
    assert "image_size" not in detail.split(";")[0] and "backbone_weights" in detail  # lists the allowed
    assert session.scalar(select(func.count(TrainingRun.id))) == 0
    ok = client.post("/api/v1/training-runs", json={"params": {"epochs": 1, "backbone_weights": "none"}},
                     headers=auth("admin"))
    assert ok.status_code == 202


@pytest.mark.parametrize("url, body, names", [
    ("/api/v1/tokens", {"name": "x", "rol": "admin"}, ["rol"]),
    ("/api/v1/models/1/activate", {"force": True}, ["force"]),
    ("/api/v1/jobs/1/close", {"now": 1}, ["now"]),
])
def test_unknown_json_fields_are_refused(client, auth, url, body, names):
    unknown_fields(client.post(url, json=body, headers=auth("admin")), *names)


def test_unknown_fields_of_a_delete_are_refused(client, auth):
    response = client.delete("/api/v1/tokens/1", json={"cascade": True}, headers=auth("admin"))
    unknown_fields(response, "cascade")


@pytest.mark.parametrize("url", ["/api/v1/training-runs", "/api/v1/tokens", "/api/v1/models/1/activate"])
def test_malformed_bodies_stay_400_and_415(client, auth, url):
    broken = client.post(url, data="{broken", content_type="application/json", headers=auth("admin"))
    assert broken.status_code == 400 and broken.get_json()["error"] == "bad_body"
    not_an_object = client.post(url, json=["a"], headers=auth("admin"))
    assert not_an_object.status_code == 400
    text = client.post(url, data="name=x", content_type="text/plain", headers=auth("admin"))
    assert text.status_code == 415


@pytest.mark.parametrize("url, names", [
    ("/api/v1/results?lable=glioma", ["lable"]),
    ("/api/v1/results?label=glioma&formt=csv", ["formt"]),
    ("/api/v1/models?all=1", ["all"]),
    ("/api/v1/jobs/1?verbose=1", ["verbose"]),
    ("/api/v1/training-runs?limit=5", ["limit"]),
])
def test_unknown_query_parameters_are_refused(client, auth, url, names):
    unknown_fields(client.get(url, headers=auth("admin")), *names)


def test_documented_query_parameters_work_and_one_typo_among_them_is_refused(client, auth):
    url = ("/api/v1/results?label=glioma&model=ensemble&min_confidence=0.5&study=s&job=1"
           "&since=2020-01-01&until=2030-01-01&page=1&per_page=10")
    assert client.get(url, headers=auth("viewer")).status_code == 200
    unknown_fields(client.get(url + "&studdy=s", headers=auth("viewer")), "studdy")
    assert client.get("/api/v1/results?limit=5&offset=0", headers=auth("viewer")).status_code == 200
    with client.get("/api/v1/results?format=csv", headers=auth("viewer")) as csv:
        assert csv.status_code == 200


def test_results_page_names_an_unknown_filter_instead_of_showing_everything(client, auth):
    page = client.get("/results?lable=glioma", headers=auth("viewer")).get_data(as_text=True)
    assert "unknown filter(s): lable" in page and "0 result(s)" in page


def test_upload_refuses_unknown_form_fields_and_file_parts(client, auth, session):
    data = upload_data([("s/a.png", png_bytes())])
    data["path"] = "s/a.png"
    unknown_fields(client.post("/api/v1/jobs", data=data, headers=auth("uploader")), "path")
    misnamed = {"file": [(io.BytesIO(png_bytes()), "a.png")]}
    unknown_fields(client.post("/api/v1/jobs", data=misnamed, headers=auth("uploader")), "file")
    unknown_fields(client.post("/api/v1/jobs?opne=1", data=upload_data([("a.png", png_bytes())]),
                               headers=auth("uploader")), "opne")
    assert session.scalar(select(func.count(Job.id))) == 0
    ok = client.post("/api/v1/jobs?open=1", data=upload_data([("a.png", png_bytes())]),
                     headers=auth("uploader"))
    assert ok.status_code == 202


@pytest.fixture()
def keras_home(tmp_path, monkeypatch):
    """A Keras cache folder (KERAS_HOME/models) holding one weights file, and a file outside it."""
    home = tmp_path / "keras"
    (home / "models").mkdir(parents=True)
    (home / "models" / "resnet50.h5").write_bytes(b"weights")
    (tmp_path / "outside.h5").write_bytes(b"secret")
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


def _weights(client, headers: dict[str, str], spec: str):
    return client.post("/api/v1/training-runs", json={"params": {"backbone_weights": spec}}, headers=headers)


def test_backbone_weights_path_must_stay_in_the_keras_cache(client, auth, keras_home, tmp_path, session):
    assert _weights(client, auth("admin"), str(keras_home / "models" / "resnet50.h5")).status_code == 202
    assert _weights(client, auth("admin"), str(keras_home / "models")).status_code == 202
    link = keras_home / "models" / "link.h5"
    link.symlink_to(tmp_path / "outside.h5")  # inside by name, outside once resolved
    for spec in (str(tmp_path / "outside.h5"), str(link), "/etc/passwd",
                 str(keras_home / "models" / ".." / ".." / "outside.h5"), "relative/weights.h5"):
        response = _weights(client, auth("admin"), spec)
        assert response.status_code == 422 and response.get_json()["error"] == "path_not_allowed", spec
    assert session.scalar(select(func.count(TrainingRun.id))) == 2


def test_backbone_weights_configured_by_the_operator_are_allowed(tmp_path, migrated_sqlite, broker,
                                                                 keras_home):
    import shutil

    from web_helpers import build_app

    folder = tmp_path / "site-weights"
    folder.mkdir()
    shutil.copy(migrated_sqlite, tmp_path / "db.sqlite")
    app = build_app(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", backbone_weights=str(folder))
    from web.auth import get_or_create_user, issue_token
    with app.extensions["mri"].session_factory() as s:
        token = issue_token(s, get_or_create_user(s, "root", "admin"))
        s.commit()
    headers = {"Authorization": f"Bearer {token}"}
    client = app.test_client()
    for spec, status in ((str(folder), 202), (str(folder / "vgg16.h5"), 202),
                         (str(tmp_path / "outside.h5"), 422)):
        assert _weights(client, headers, spec).status_code == status, spec
    app.extensions["mri"].engine.dispose()
