"""CLI: db upgrade, create-token (last line is a working token), create-user, register-model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from db.models import ModelVersion, User
from web_helpers import WEB_REDIS_URL, build_app, png_bytes, queued_messages, upload_data

REPO = Path(__file__).resolve().parents[2]


def test_create_token_prints_a_working_token_last(app, client):
    result = app.test_cli_runner().invoke(args=["create-token", "ops-bot", "--role", "uploader"])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/models", headers=headers).status_code == 200
    assert client.post("/api/v1/jobs", data=upload_data([("a.png", png_bytes())]), headers=headers).status_code == 202
    assert client.post("/api/v1/training-runs", headers=headers).status_code == 403
    # same user again: a second token, role updated
    again = app.test_cli_runner().invoke(args=["create-token", "ops-bot", "--role", "viewer"])
    assert again.output.strip().splitlines()[-1] != token
    with app.extensions["mri"].session_factory() as s:
        user = s.execute(select(User).where(User.name == "ops-bot")).scalar_one()
        assert user.role == "viewer" and len(user.tokens) == 2


def test_create_token_without_role_keeps_an_existing_users_role(app):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["create-token", "admin", "--role", "admin"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(args=["create-token", "admin"])  # no --role: must not demote
    assert again.exit_code == 0, again.output
    fresh = runner.invoke(args=["create-token", "newcomer"])
    assert fresh.exit_code == 0, fresh.output
    with app.extensions["mri"].session_factory() as s:
        roles = dict(s.execute(select(User.name, User.role)).all())
    assert roles["admin"] == "admin" and roles["newcomer"] == "viewer"
    assert "(admin)" in again.output


def test_create_user_without_role_keeps_an_existing_users_role(app):
    runner = app.test_cli_runner()
    assert runner.invoke(args=["create-token", "boss", "--role", "admin"]).exit_code == 0
    result = runner.invoke(args=["create-user", "boss", "--password", "long enough"])
    assert result.exit_code == 0, result.output
    with app.extensions["mri"].session_factory() as s:
        assert s.execute(select(User.role).where(User.name == "boss")).scalar_one() == "admin"


def test_create_token_refuses_unknown_roles(app):
    result = app.test_cli_runner().invoke(args=["create-token", "x", "--role", "root"])
    assert result.exit_code != 0 and "root" in result.output


def test_create_user_sets_a_password_hash(app):
    result = app.test_cli_runner().invoke(args=["create-user", "eve", "--role", "reviewer",
                                                "--password", "long enough"])
    assert result.exit_code == 0, result.output
    with app.extensions["mri"].session_factory() as s:
        user = s.execute(select(User).where(User.name == "eve")).scalar_one()
        assert user.role == "reviewer" and user.password_hash and "long enough" not in user.password_hash
    short = app.test_cli_runner().invoke(args=["create-user", "eve", "--password", "short"])
    assert short.exit_code != 0 and "8 characters" in short.output


def test_flask_cli_db_upgrade_and_create_token_end_to_end(tmp_path):
    env = {**os.environ, "APP_ENV": "test", "DATA_DIR": str(tmp_path), "LOG_LEVEL": "WARNING",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "REDIS_URL": WEB_REDIS_URL}
    flask = [sys.executable, "-m", "flask", "--app", "web"]
    upgrade = subprocess.run([*flask, "db", "upgrade"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert upgrade.returncode == 0, upgrade.stderr
    made = subprocess.run([*flask, "create-token", "admin", "--role", "admin"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    app = build_app(tmp_path, env["DATABASE_URL"], data_dir=tmp_path)
    response = app.test_client().get("/api/v1/models", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and json.loads(response.data)["models"] == []


def test_register_model_refuses_a_bad_bundle(app, tmp_path):
    bad = tmp_path / "not-a-bundle"
    bad.mkdir()
    (bad / "manifest.json").write_text("{}")
    result = app.test_cli_runner().invoke(args=["register-model", str(bad)])
    assert result.exit_code != 0 and "not a valid model bundle" in result.output
    missing = app.test_cli_runner().invoke(args=["register-model", str(tmp_path / "nope")])
    assert missing.exit_code != 0
    with app.extensions["mri"].session_factory() as s:
        assert s.execute(select(ModelVersion)).first() is None


def test_register_model_with_a_tiny_real_bundle_activates_and_starts_waiting_jobs(app, client, auth,
                                                                                 tiny_bundle, broker):
    bundle = tiny_bundle
    job_id = client.post("/api/v1/jobs", data=upload_data([("s/a.png", png_bytes(1)), ("s/b.png", png_bytes(2))]),
                         headers=auth("uploader")).get_json()["id"]
    runner = app.test_cli_runner()
    plain = runner.invoke(args=["register-model", str(bundle)])
    assert plain.exit_code == 0, plain.output
    assert "candidate" in plain.output and queued_messages(broker, "inference") == []
    result = runner.invoke(args=["register-model", str(bundle), "--activate"])
    assert result.exit_code == 0, result.output
    assert "dispatched 1 waiting job" in result.output
    with app.extensions["mri"].session_factory() as s:
        (version,) = s.execute(select(ModelVersion)).scalars().all()  # same digest: one row
        assert version.status == "active" and version.manifest["classes"]
    messages = queued_messages(broker, "inference")
    assert len(messages) == 1 and len(messages[0]["args"][0]) == 2 and messages[0]["args"][1] == version.id
    models = client.get("/api/v1/models", headers=auth("viewer")).get_json()
    assert models["active"] == version.id and models["models"][0]["backbone_weights"]["mode"] == "none"
    assert client.get(f"/api/v1/jobs/{job_id}", headers=auth("viewer")).get_json()["detail"] == ""
