"""Migrations build the schema the models describe, on PostgreSQL and SQLite, and roll back."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from db import Base
from db.migrate import downgrade, upgrade

TABLES = {"users", "api_tokens", "jobs", "scans", "predictions", "reviews", "model_versions",
          "training_runs", "audit_events"}


def _assert_matches_models(url: str) -> None:
    engine = create_engine(url)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                 Base.metadata)
    engine.dispose()
    assert diffs == [], f"models and migrations disagree: {diffs}"


def test_postgres_upgrade_matches_models_and_downgrades(postgres_url):
    upgrade(postgres_url)
    _assert_matches_models(postgres_url)
    downgrade(postgres_url, "base")
    engine = create_engine(postgres_url)
    assert TABLES.isdisjoint(inspect(engine).get_table_names())
    engine.dispose()


def test_sqlite_upgrade_matches_models(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    engine = create_engine(url)
    assert TABLES <= set(inspect(engine).get_table_names())
    engine.dispose()
    _assert_matches_models(url)
