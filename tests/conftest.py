"""Fixtures shared by every room's tests: the shared dataset and real PostgreSQL/Redis."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_TRAINING_DIR = REPO_ROOT.parent / "shared" / "data" / "brain-mri" / "Training"
# Where the suite finds its services; .ci/run starts them when they do not answer.
TEST_POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
# TEST_REDIS_URL names the first of four Redis databases per xdist worker (see suite_redis_url).

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep the tests that start real processes together under pytest-xdist (--dist loadgroup).

    They run one after another on one worker, as they did before the suite ran in parallel,
    while the other worker takes the in-process tests: their lease and outage timings never
    compete with each other for the two cores, only with one in-process test at a time.
    """
    for item in items:
        if item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.xdist_group("processes"))
        elif item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.xdist_group("browser"))


@pytest.fixture(scope="session")
def shared_training_dir() -> Path:
    """The read-only labelled MRI folder beside the repository, or skip."""
    if not SHARED_TRAINING_DIR.is_dir():
        pytest.skip(f"shared dataset not found at {SHARED_TRAINING_DIR}")
    return SHARED_TRAINING_DIR


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real five-model bundle at 32 px (random backbones), built once per test session."""
    from tests.helpers.tiny_bundle import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny", image_size=32)


def _admin_url() -> str:
    return TEST_POSTGRES_URL


@pytest.fixture()
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    admin = sqlalchemy.create_engine(_admin_url(), isolation_level="AUTOCOMMIT")
    name = f"mri_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sqlalchemy.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {_admin_url()}: {exc}. Start it (see README).")
    url = _admin_url().rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture()
def redis_url() -> Iterator[str]:
    """A Redis database reserved for tests, flushed before and after."""
    from tests.helpers.services import redis_client, suite_redis_url

    url = suite_redis_url(0)
    client = redis_client(url, flush=True)
    yield url
    client.flushdb()
