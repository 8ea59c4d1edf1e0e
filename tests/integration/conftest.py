"""Integration fixtures: a real Celery worker subprocess on PostgreSQL + Redis db 12, a tiny bundle."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from db.migrate import upgrade
from db.session import make_engine, make_session_factory
from tests.helpers.services import suite_redis_url
from tests.integration.worker_process import REPO, Worker, clean_env
from tests.workers.jobdata import service_settings

WORKER_REDIS_URL = suite_redis_url(1)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A real five-model bundle at 32 px, built once per session."""
    from tests.helpers.tiny_bundle import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny", image_size=32)


@pytest.fixture()
def broker_url() -> Iterator[str]:
    """Redis db 12: the worker tests' broker (each test uses its own key prefix, deleted afterwards)."""
    from tests.helpers.services import redis_client

    client = redis_client(WORKER_REDIS_URL, flush=False)
    yield WORKER_REDIS_URL
    client.close()


@pytest.fixture()
def service(tmp_path: Path, postgres_url: str, broker_url: str):
    """(settings, session factory) on a migrated PostgreSQL database and Redis db 12."""
    upgrade(postgres_url)
    # A key prefix of its own keeps this test's queues apart from any other run sharing db 12.
    settings = service_settings(tmp_path, postgres_url, broker_url,
                                broker_key_prefix=f"itest-{uuid.uuid4().hex[:8]}:")
    engine = make_engine(postgres_url)
    yield settings, make_session_factory(engine)
    engine.dispose()
    import redis

    client = redis.Redis.from_url(broker_url)
    for key in client.scan_iter(f"{settings.broker_key_prefix}*"):
        client.delete(key)
    client.close()


def worker_env(settings, **extra: str) -> dict[str, str]:
    """The environment a worker or beat of this test's service runs with: a plain shell's plus settings."""
    return clean_env(APP_ENV="test", DATABASE_URL=settings.database_url, REDIS_URL=settings.redis_url,
                     BROKER_KEY_PREFIX=settings.broker_key_prefix, DATA_DIR=str(settings.data_dir),
                     INFERENCE_BATCH_SIZE=str(settings.inference_batch_size), RETRAIN_SCHEDULE="",
                     KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "tensorflow"), TF_CPP_MIN_LOG_LEVEL="2",
                     **extra)


@pytest.fixture()
def start_worker(tmp_path: Path, service, request) -> Iterator[Callable[..., Worker]]:
    """start_worker(pool="solo", cwd=REPO, **env) → a running worker with the service's settings.

    The worker gets a plain shell's environment (no PYTHONPATH): the project must be
    importable because it is installed in the virtualenv, as the README says.
    """
    settings, _ = service
    started: list[Worker] = []

    def start(pool: str = "solo", cwd: Path = REPO, concurrency: int = 1,
              queues: str = "inference,training,default", **extra: str) -> Worker:
        worker = Worker(worker_env(settings, **extra), tmp_path / f"worker{len(started)}.log", pool, cwd=cwd,
                        concurrency=concurrency, queues=queues)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(worker.output()[-6000:])


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's report so fixtures can print worker logs on failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
