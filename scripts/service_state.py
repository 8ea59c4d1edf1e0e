"""Read what the local runner reports: model versions, training runs, waiting jobs.

Reads the database directly (read-only) so the runner's status lines do not depend
on API details, and so the first-training decision sees runs queued by anyone.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping

from sqlalchemy import func, or_, select

from config.settings import load_settings
from db.models import Job, ModelVersion, TrainingRun
from db.session import make_engine, make_session_factory


@dataclass(frozen=True)
class ServiceState:
    """A snapshot of the facts the runner prints."""

    versions: int = 0
    active: int | None = None
    full_versions: int = 0  # versions not trained with the "quick" profile
    open_runs: tuple[int, ...] = ()
    runs: dict[int, tuple[str, str, float, str]] = field(default_factory=dict)  # id → status, stage, progress, error
    waiting_jobs: int = 0


def database_url(env: Mapping[str, str]) -> str:
    """The database the service in `env` uses (DATABASE_URL or its default)."""
    # The runner signs nothing, so it does not need the secret key.
    return load_settings(env, overrides={"secret_key": ""}).database_url


def read_state(env: Mapping[str, str]) -> ServiceState:
    """Query the service's database once."""
    engine = make_engine(database_url(env))
    try:
        with make_session_factory(engine)() as session:
            versions = session.scalar(select(func.count()).select_from(ModelVersion)) or 0
            # Counted in the database: the watcher polls every few seconds, manifests are large.
            profile = ModelVersion.manifest["profile"].as_string()
            full_versions = session.scalar(select(func.count()).select_from(ModelVersion).where(
                or_(profile.is_(None), profile != "quick"))) or 0
            active = session.scalar(select(ModelVersion.id).where(ModelVersion.status == "active"))
            recent = session.execute(
                select(TrainingRun.id, TrainingRun.status, TrainingRun.stage, TrainingRun.progress,
                       TrainingRun.error).order_by(TrainingRun.id.desc()).limit(5)).all()
            waiting = session.scalar(select(func.count()).select_from(Job).where(Job.status == "queued")) or 0
    finally:
        engine.dispose()
    runs = {row.id: (row.status, row.stage or "", float(row.progress or 0.0), row.error or "")
            for row in recent}
    open_runs = tuple(sorted(rid for rid, r in runs.items() if r[0] in ("queued", "running")))
    return ServiceState(versions, active, full_versions, open_runs, runs, waiting)


class ServiceWatcher:
    """Turns state changes into short status lines, polling at most every ``interval_s``."""

    def __init__(self, env: Mapping[str, str], interval_s: float = 10.0,
                 progress_every_s: float = 60.0) -> None:
        self.env = env
        self.interval_s = interval_s
        self.progress_every_s = progress_every_s
        self._last_poll = 0.0
        self._last_progress_line = 0.0
        self._previous: ServiceState | None = None
        self._error_reported = False

    def poll(self) -> list[str]:
        """Lines describing what changed since the last poll (may be empty)."""
        now = time.monotonic()
        if now - self._last_poll < self.interval_s:
            return []
        self._last_poll = now
        try:
            state = read_state(self.env)
        except Exception as exc:  # status lines must never take the service down
            if self._error_reported:
                return []
            self._error_reported = True
            return [f"cannot read the database for status lines: {exc.__class__.__name__}"]
        lines = self.describe(self._previous, state, now)
        self._previous = state
        return lines

    def describe(self, before: ServiceState | None, after: ServiceState, now: float) -> list[str]:
        """Compare two snapshots."""
        lines = []
        if before is not None and after.active != before.active and after.active is not None:
            lines.append(f"model version #{after.active} is active: jobs are classified now")
        for run_id, (status, stage, progress, error) in sorted(after.runs.items()):
            old = before.runs.get(run_id) if before else None
            if before is None and status not in ("queued", "running"):
                continue  # history from earlier sessions is not news
            if old is not None and old[0] == status and status != "running":
                continue
            if status == "failed" and (old is None or old[0] != "failed"):
                lines.append(f"training run #{run_id} failed: {error or 'see the worker log'}")
            elif status == "succeeded" and (old is None or old[0] != "succeeded"):
                lines.append(f"training run #{run_id} succeeded")
            elif status == "running":
                # A new stage is news at once; progress within a stage at most once a minute.
                new_stage = old is None or old[0] != "running" or old[1] != stage
                due = (not new_stage and old[2] != progress
                       and now - self._last_progress_line >= self.progress_every_s)
                if new_stage or due:
                    self._last_progress_line = now
                    lines.append(f"training run #{run_id}: {stage or 'running'} {progress:.0%}")
        if after.waiting_jobs and after.active is None and (
                before is None or before.waiting_jobs != after.waiting_jobs):
            lines.append(f"{after.waiting_jobs} job(s) waiting for a trained model")
        return lines
