"""Fixtures for the web room: an app on a migrated SQLite copy, Redis db 13 as broker, tokens by role."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from web_helpers import WEB_REDIS_URL, build_app


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once to head; each test gets a copy."""
    from db.migrate import upgrade

    path = tmp_path_factory.mktemp("web-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture()
def broker() -> Iterator[Any]:
    """redis-py client on the tests' broker database (13), flushed before and after."""
    from tests.helpers.services import redis_client

    client = redis_client(WEB_REDIS_URL, flush=True)
    yield client
    client.flushdb()
    client.close()


@pytest.fixture()
def app(tmp_path: Path, migrated_sqlite: Path, broker):
    """The Flask app on a fresh SQLite copy, DATA_DIR in tmp_path, broker Redis db 13."""
    db_file = tmp_path / "service.db"
    shutil.copy(migrated_sqlite, db_file)
    application = build_app(tmp_path, f"sqlite:///{db_file}")
    yield application
    application.extensions["mri"].engine.dispose()


@pytest.fixture()
def client(app):
    """Flask test client."""
    return app.test_client()


@pytest.fixture()
def session(app):
    """A session on the app's database for arranging and checking rows."""
    with app.extensions["mri"].session_factory() as s:
        yield s


@pytest.fixture()
def auth(app) -> Callable[[str], dict[str, str]]:
    """auth(role) -> Authorization header of a fresh user with that role."""
    from web.auth import get_or_create_user, issue_token

    cache: dict[str, dict[str, str]] = {}

    def make(role: str = "admin") -> dict[str, str]:
        if role not in cache:
            with app.extensions["mri"].session_factory() as s:
                user = get_or_create_user(s, f"{role}-user", role)
                token = issue_token(s, user)
                s.commit()
            cache[role] = {"Authorization": f"Bearer {token}"}
        return cache[role]

    return make


@pytest.fixture()
def active_version(app) -> int:
    """An active ModelVersion row (what dispatch needs to enqueue), returns its id."""
    from db.models import ModelVersion

    with app.extensions["mri"].session_factory() as s:
        version = ModelVersion(digest="a" * 64, bundle_path="/nonexistent/bundle",
                               manifest={"classes": ["glioma", "meningioma", "notumor", "pituitary"],
                                         "image_size": 32},
                               backbone_weights="none", metrics={}, status="active")
        s.add(version)
        s.commit()
        return version.id


@pytest.fixture()
def live_server(app):
    """The app served by werkzeug on a free local port, in a thread."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)
