"""The Celery room. ``celery -A workers worker`` and ``celery -A workers beat`` find ``workers.celery``.

The app is built on first access (PEP 562), not at import, so importing
``workers.app`` from the web costs nothing and reads no settings.
"""
from __future__ import annotations

from typing import Any

# Imported here, not lazily: `celery -A workers` takes the working directory off
# sys.path again before the app is first built, so a late import of these fails.
import config.settings  # noqa: F401
import workers.app  # noqa: F401  (light: Celery itself imports no TensorFlow)

__all__ = ["celery"]

_app = None


def __getattr__(name: str) -> Any:
    global _app
    if name != "celery":
        raise AttributeError(f"module 'workers' has no attribute {name!r}")
    if _app is None:
        from config.settings import load_settings
        from workers import signals  # noqa: F401  (connects worker signal handlers)
        from workers.app import create_celery

        # Workers and beat sign nothing, so they run without SECRET_KEY (the web requires it).
        _app = create_celery(load_settings(overrides={"secret_key": ""}))
        _app.set_default()
    return _app

