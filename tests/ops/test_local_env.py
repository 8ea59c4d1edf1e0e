"""The local runner's decisions: which broker, the kept secret key, a private Redis, class folders."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.helpers.services import suite_redis_url
from scripts.local_env import (choose_broker, ensure_secret_key, free_port, labelled_classes, ping_redis,
                               private_redis_command, wait_for_redis)

TEST_REDIS = suite_redis_url(0)


def closed_redis_url() -> str:
    """A Redis URL on a port nothing listens on (bound and released just now)."""
    return f"redis://127.0.0.1:{free_port()}/0"


def test_explicit_broker_url_wins():
    choice = choose_broker(closed_redis_url(), broker_url="filesystem://")
    assert (choice.kind, choice.url) == ("configured", "filesystem://")


def test_redis_that_answers_is_used(redis_url):
    choice = choose_broker(redis_url)
    assert choice.kind == "redis"
    assert choice.url == redis_url


def test_private_redis_when_none_answers_but_server_installed(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    server = fake_bin / "redis-server"
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    choice = choose_broker(closed_redis_url(), search_path=str(fake_bin))
    assert choice.kind == "private-redis"
    assert str(server) in choice.reason


def test_embedded_transport_when_no_redis_at_all(tmp_path):
    choice = choose_broker(closed_redis_url(), search_path=str(tmp_path))
    assert (choice.kind, choice.url) == ("filesystem", "filesystem://")
    assert "filesystem transport" in choice.reason


def test_ping_redis_false_on_closed_port():
    assert ping_redis(closed_redis_url(), timeout_s=0.5) is False


def test_secret_key_is_created_private_once_and_kept(tmp_path):
    path = ensure_secret_key(tmp_path)
    first = path.read_text()
    assert len(first.strip()) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)  # a looser mode found on a later run is tightened, the key kept
    assert ensure_secret_key(tmp_path).read_text() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_secret_key_is_what_settings_read(tmp_path):
    from config.settings import load_settings

    key = ensure_secret_key(tmp_path).read_text().strip()
    assert load_settings({"DATA_DIR": str(tmp_path), "APP_ENV": "development"}).secret_key == key


def test_empty_secret_key_file_is_refused(tmp_path):
    (tmp_path / "secret_key").write_text("")
    with pytest.raises(RuntimeError, match="empty"):
        ensure_secret_key(tmp_path)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_private_redis_starts_answers_and_keeps_its_port(tmp_path):
    argv, url = private_redis_command(tmp_path)
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for_redis(url, timeout_s=10)
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert (tmp_path / "redis" / "port").read_text().strip() == url.rsplit(":", 1)[1].split("/")[0]
    assert private_redis_command(tmp_path)[1] == url  # same port next run while it is free
    assert "--save" in argv and argv[argv.index("--save") + 1] == ""


def test_labelled_classes(tmp_path):
    assert labelled_classes(None) == []
    assert labelled_classes(tmp_path / "missing") == []
    for name in ("glioma", "notumor"):
        (tmp_path / name).mkdir()
    (tmp_path / "glioma" / "a.jpg").write_bytes(b"x")
    assert labelled_classes(tmp_path) == []  # one class with images is not a labelled folder
    (tmp_path / "notumor" / "b.PNG").write_bytes(b"x")
    (tmp_path / ".cache").mkdir()
    assert labelled_classes(tmp_path) == ["glioma", "notumor"]


def test_shared_dataset_is_labelled(shared_training_dir: Path):
    assert labelled_classes(shared_training_dir) == ["glioma", "meningioma", "notumor", "pituitary"]


def test_first_runs_use_random_backbones_when_imagenet_cannot_be_had(tmp_path, monkeypatch):
    """Offline, `make run` must not queue first runs that can only fail (an outside-in trial did)."""
    from scripts import run_local

    monkeypatch.setattr(run_local, "say", lambda line: None)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # an empty cache
    monkeypatch.setenv("BACKBONE_WEIGHTS_BASE_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens
    assert run_local.first_run_params({}) == {"backbone_weights": "none"}
    assert run_local.first_run_params({"BACKBONE_WEIGHTS": "imagenet"}) == {"backbone_weights": "imagenet"}
    from models.backbones import OFFICIAL_FILES

    (tmp_path / "keras" / "models").mkdir(parents=True)
    for info in OFFICIAL_FILES.values():  # cached files (resolve_backbone_weights checks their MD5 later)
        (tmp_path / "keras" / "models" / info["filename"]).write_bytes(b"cached")
    assert run_local.first_run_params({}) == {}


def test_a_missing_postgres_database_is_created_once_and_an_unreachable_one_says_so(postgres_url):
    """A newcomer's DATABASE_URL naming a database that does not exist got a 100-line traceback."""
    import sqlalchemy

    from scripts.local_env import ensure_database

    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    name = postgres_url.rsplit("/", 1)[1] + "_made"
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        assert ensure_database(url) == f"created the PostgreSQL database {name!r}"
        assert ensure_database(url) is None
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    with pytest.raises(RuntimeError, match="is PostgreSQL running"):
        ensure_database(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")
    assert ensure_database("sqlite:///x.db") is None


def test_make_run_on_a_shared_redis_keeps_its_keys_apart_per_data_dir(tmp_path):
    """Two checkouts' `make run` on one already-running Redis must not take each other's tasks."""
    from scripts.local_env import BrokerChoice
    from scripts.run_local import start_broker, write_env_file

    def env_for(data_dir: Path, **given: str) -> dict[str, str]:
        env = dict(given)
        data_dir.mkdir(exist_ok=True)
        start_broker(BrokerChoice("redis", "redis://127.0.0.1:6379/0", "Redis answers"), None, env, data_dir,
                     tmp_path)
        return env

    first, again, other = env_for(tmp_path / "a"), env_for(tmp_path / "a"), env_for(tmp_path / "b")
    assert first["BROKER_KEY_PREFIX"].startswith("mri-") and first["BROKER_KEY_PREFIX"].endswith(":")
    assert first["BROKER_KEY_PREFIX"] == again["BROKER_KEY_PREFIX"] != other["BROKER_KEY_PREFIX"]
    assert env_for(tmp_path / "a", BROKER_KEY_PREFIX="mine:")["BROKER_KEY_PREFIX"] == "mine:"  # a set one wins
    local_env = write_env_file(tmp_path / "a", first).read_text()
    assert f"export BROKER_KEY_PREFIX={first['BROKER_KEY_PREFIX']}" in local_env
    # The filesystem transport is this install's own: no prefix
    own: dict[str, str] = {}
    start_broker(BrokerChoice("filesystem", "filesystem://", "no Redis"), None, own, tmp_path / "a", tmp_path)
    assert "BROKER_KEY_PREFIX" not in own and own["BROKER_URL"] == "filesystem://"
