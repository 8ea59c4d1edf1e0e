"""Per-process resources of a worker: settings, the DB session factory and the inference engine.

Everything is created lazily in the process that uses it. After a fork the
inherited DB pool is thrown away (its sockets belong to the parent), and the
inference engine, cached per model version, is only ever built in the process
that runs the task, so TensorFlow never loads in the parent of a prefork pool.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings, load_settings
from db.session import make_engine, make_session_factory

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_settings: Settings | None = None
_db: tuple[int, Engine, sessionmaker[Session]] | None = None
# model_version_id -> InferenceEngine; only the newest version is kept (a model is ~hundreds of MB).
_engines: dict[tuple[int, str], Any] = {}
_devices_configured = False


def settings() -> Settings:
    """The settings of this process, read from the environment once."""
    global _settings
    if _settings is None:
        # Workers sign nothing, so they run without SECRET_KEY (the web requires it).
        _settings = load_settings(overrides={"secret_key": ""})
    return _settings


def session_factory() -> sessionmaker[Session]:
    """This process's session factory (a new engine after a fork)."""
    global _db
    with _lock:
        if _db is None or _db[0] != os.getpid():
            engine = make_engine(settings().database_url)
            _db = (os.getpid(), engine, make_session_factory(engine))
        return _db[2]


def reset_after_fork() -> None:
    """Forget the parent's DB engine without closing its sockets (they are the parent's)."""
    global _db
    if _db is not None:
        _db[1].dispose(close=False)
    _db = None


def shutdown() -> None:
    """Close this process's DB pool."""
    global _db
    if _db is not None and _db[0] == os.getpid():
        _db[1].dispose()
    _db = None


def configure_devices() -> None:
    """Turn on GPU memory growth (TensorFlow) before any model is built in this process."""
    global _devices_configured
    if _devices_configured:
        return
    _devices_configured = True
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError as exc:  # already initialised; harmless
                logger.warning("could not enable memory growth on %s: %s", gpu.name, exc)


def resolve_precision(setting: str) -> str:
    """INFERENCE_PRECISION → the engine's precision: 'auto' picks bfloat16 on bf16 CPUs or GPUs."""
    if setting in ("float32", "bfloat16"):  # no Keras import for an explicit choice
        return setting
    from models.precision import resolve_precision as resolve  # imports Keras: only when needed

    return resolve(setting)


def engine_for(model_version_id: int, bundle_path: str | Path, conf: Settings | None = None) -> Any:
    """The InferenceEngine for a model version, loaded (and verified) once per process."""
    conf = conf or settings()
    with _lock:
        key = (model_version_id, str(bundle_path))
        engine = _engines.get(key)
        if engine is not None:
            return engine
        configure_devices()
        from models.engine import InferenceEngine

        precision = resolve_precision(conf.inference_precision)
        logger.info("loading model version %s from %s (%s)", model_version_id, bundle_path, precision)
        engine = InferenceEngine.from_bundle(bundle_path, precision=precision,
                                             batch_size=conf.inference_batch_size)
        _engines.clear()
        _engines[key] = engine
        return engine
