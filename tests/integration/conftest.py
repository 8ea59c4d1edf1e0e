"""Integration fixtures: a real Celery worker subprocess on PostgreSQL + Redis db 12, a tiny bundle."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from db.migrate import upgrade
from db.session import make_engine, make_session_factory
from tests.integration.worker_process import REPO, Worker
from tests.workers.jobdata import service_settings

WORKER_REDIS_URL = "redis://127.0.0.1:6379/12"


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


@pytest.fixture()
def start_worker(tmp_path: Path, service, request) -> Iterator[Callable[..., Worker]]:
    """start_worker(pool="solo", **env) → a running worker with the service's settings."""
    settings, _ = service
    started: list[Worker] = []

    def start(pool: str = "solo", **extra: str) -> Worker:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "BROKER_"))}
        env.update(APP_ENV="test", DATABASE_URL=settings.database_url, REDIS_URL=settings.redis_url,
                   BROKER_KEY_PREFIX=settings.broker_key_prefix, DATA_DIR=str(settings.data_dir), INFERENCE_BATCH_SIZE=str(settings.inference_batch_size),
                   RETRAIN_SCHEDULE="", KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "tensorflow"),
                   TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO), **extra)
        worker = Worker(env, tmp_path / f"worker{len(started)}.log", pool)
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
