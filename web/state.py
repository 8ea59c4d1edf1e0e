"""Per-app resources (settings, engine, session factory, Celery) and the per-request DB session."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, current_app, g
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from db.session import make_engine, make_session_factory
from web.errors import ApiError
from web.job_events import JobWatch

logger = logging.getLogger(__name__)
EXTENSION_KEY = "mri"


@dataclass
class AppState:
    """What one Flask app holds for its whole life."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    celery: Any
    job_watch: JobWatch  # the status event streams of this process


def init_app(app: Flask, settings: Settings) -> AppState:
    """Create the engine, session factory and sending Celery app; close sessions after each request."""
    from workers.app import create_celery  # the one Celery app definition lives with the workers

    engine = make_engine(settings.database_url)
    celery = create_celery(settings)
    celery.set_default()
    factory = make_session_factory(engine)
    state = AppState(settings=settings, engine=engine, session_factory=factory, celery=celery,
                     job_watch=JobWatch(factory, max_streams=settings.job_events_max_streams))
    app.extensions[EXTENSION_KEY] = state
    app.teardown_appcontext(_close_session)
    return state


def app_state() -> AppState:
    """The AppState of the current Flask app."""
    return current_app.extensions[EXTENSION_KEY]


def settings() -> Settings:
    """The current app's settings."""
    return app_state().settings


def db_session() -> Session:
    """The request's SQLAlchemy session, opened on first use and closed at teardown."""
    if "db_session" not in g:
        g.db_session = app_state().session_factory()
    return g.db_session


def use_celery() -> Any:
    """Make this app's Celery the current one (thread-local and default) before sending tasks."""
    celery = app_state().celery
    celery.set_current()
    celery.set_default()
    return celery


def _close_session(exc: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is None:
        return
    try:
        if exc is not None:
            session.rollback()
    finally:
        session.close()


RowT = TypeVar("RowT")


def get_or_404(model: type[RowT], row_id: int, what: str) -> RowT:
    """The row of `model` with this id in the request's session, or a JSON 404 naming `what`."""
    row = db_session().get(model, row_id)
    if row is None:
        raise ApiError(404, "not_found", f"{what} {row_id} does not exist")
    return row
