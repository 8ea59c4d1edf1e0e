"""The service's training path in one process (SQLite, no broker), for the benches that measure it."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def in_process_service(out: Path, data: str, **environ: str) -> tuple[Any, Any]:
    """(settings, session factory) over a migrated SQLite database in `out`, training on `data`."""
    from config.settings import load_settings
    from db.migrate import upgrade
    from db.session import make_engine, make_session_factory

    out.mkdir(parents=True, exist_ok=True)
    settings = load_settings(environ={"APP_ENV": "test", "TRAINING_DATA_DIR": data, **environ},
                             overrides={"data_dir": out / "data", "database_url": f"sqlite:///{out / 'service.db'}"})
    upgrade(settings.database_url)
    return settings, make_session_factory(make_engine(settings.database_url))


def train_now(factory: Any, settings: Any, params: dict) -> tuple[int, float]:
    """Queue a manual training run with `params` and run it here, as a worker would; (run id, wall seconds)."""
    from db.models import TrainingRun
    from tasks.train import run_training

    with factory() as session:
        run = TrainingRun(trigger="manual", params=params)
        session.add(run)
        session.commit()
        run_id = run.id
    started = time.perf_counter()
    run_training(factory, settings, run_id)
    return run_id, time.perf_counter() - started
