"""Writing predictions idempotently: one row per (scan, model version, model name), first write wins."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from sqlalchemy.orm import Session

from db.models import Prediction

CONFLICT_COLUMNS = ("scan_id", "model_version_id", "model_name")


def _insert_for(session: Session):
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only PostgreSQL and SQLite are supported
        raise RuntimeError(f"unsupported database dialect {dialect!r}")
    return insert


def insert_predictions(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert prediction rows, silently skipping any that already exist (a retried batch)."""
    if not rows:
        return
    insert = _insert_for(session)
    statement = insert(Prediction).on_conflict_do_nothing(index_elements=list(CONFLICT_COLUMNS))
    session.execute(statement, list(rows))


def prediction_rows(scan_id: int, model_version_id: int, result: dict[str, Any],
                    latency_ms: float | None) -> list[dict[str, Any]]:
    """The five model rows plus the ensemble row for one engine result."""
    rows = []
    entries: Iterable[tuple[str, dict[str, Any]]] = [*result["predictions"].items(),
                                                     ("ensemble", result["ensemble"])]
    for name, entry in entries:
        probabilities = {str(k): float(v) for k, v in entry["probabilities"].items()}
        rows.append(dict(
            scan_id=scan_id, model_version_id=model_version_id, model_name=name,
            label=str(entry["label"]), confidence=max(probabilities.values()),
            probabilities=probabilities,
            agreement=int(entry["agreement"]) if name == "ensemble" else None,
            # The engine decides review from the bundle's triage rule (None: the bundle has none).
            needs_review=entry.get("needs_review") if name == "ensemble" else None,
            latency_ms=latency_ms))
    return rows
