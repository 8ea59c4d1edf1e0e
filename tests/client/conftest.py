"""Fixtures for the command-line client's tests: the real web app served over real HTTP in a thread
(SQLite, Redis db 13 under a key prefix of its own), a proxy in front of it that counts requests
and can cut the connection, and a runner of `mri-classify` in this process."""
from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from client_helpers import Proxy, serve

CLIENT_REDIS_URL = "redis://127.0.0.1:6379/13"


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once to head; each test gets a copy."""
    from db.migrate import upgrade

    path = tmp_path_factory.mktemp("client-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@dataclass
class Service:
    """A running web app: its URL, the Flask app and a token per role."""

    url: str
    app: Any
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, role: str) -> str:
        """A token of a user with `role` (made once per role)."""
        if role not in self.tokens:
            from web.auth import get_or_create_user, issue_token

            with self.app.extensions["mri"].session_factory() as session:
                self.tokens[role] = issue_token(session, get_or_create_user(session, f"cli-{role}", role))
                session.commit()
        return self.tokens[role]

    def session(self):
        """A database session on the service's database."""
        return self.app.extensions["mri"].session_factory()


@pytest.fixture()
def service(tmp_path: Path, migrated_template: Path) -> Iterator[Service]:
    """The real web app over HTTP on a fresh SQLite copy (no worker: scans stay queued)."""
    from tests.helpers.services import redis_client
    from web import create_app

    redis = redis_client(CLIENT_REDIS_URL, flush=False)
    prefix = f"cli-{uuid.uuid4().hex[:8]}:"
    db_file = tmp_path / "service.db"
    shutil.copy(migrated_template, db_file)
    app = create_app({"env": "test", "data_dir": tmp_path / "data", "database_url": f"sqlite:///{db_file}",
                      "redis_url": CLIENT_REDIS_URL, "broker_key_prefix": prefix, "max_upload_mb": 2,
                      "log_level": "WARNING"})
    server, thread = serve(app)
    yield Service(f"http://127.0.0.1:{server.server_port}", app)
    server.shutdown()
    thread.join(10)
    app.extensions["mri"].engine.dispose()
    for key in redis.scan_iter(f"{prefix}*"):
        redis.delete(key)
    redis.close()


@pytest.fixture()
def proxy(service: Service) -> Iterator[Proxy]:
    """A counting, cuttable proxy in front of the service."""
    front = Proxy(service.url)
    yield front
    front.stop()


@dataclass
class Run:
    """One `mri-classify` run: exit code, stdout, stderr."""

    code: int
    out: str
    err: str


@pytest.fixture()
def mri(capsys, tmp_path: Path) -> Callable[..., Run]:
    """mri(*argv, env={...}) runs the client's main() in this process with only `env` (plus HOME and
    the state folder in tmp_path) as its environment."""
    from client.cli import main

    def run(*argv: str, env: dict[str, str] | None = None) -> Run:
        environ = {"HOME": str(tmp_path / "home"), "MRI_STATE_DIR": str(tmp_path / "state"), **(env or {})}
        capsys.readouterr()
        try:
            code = main(list(argv), environ)
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run
