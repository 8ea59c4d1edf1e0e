"""Fixtures for worker unit tests: the same tests run on SQLite and on PostgreSQL."""
from __future__ import annotations

from pathlib import Path

import pytest

from db.migrate import upgrade
from db.session import make_engine, make_session_factory
from tests.workers.jobdata import service_settings


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path: Path) -> str:
    """A migrated, empty database of each supported kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'service.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    upgrade(url)
    return url


@pytest.fixture()
def factory(database_url: str):
    """A session factory on the test database."""
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture()
def settings(tmp_path: Path, database_url: str, redis_url: str):
    """Settings pointing at the test database, Redis db 11 and a temporary DATA_DIR."""
    return service_settings(tmp_path, database_url, redis_url)


