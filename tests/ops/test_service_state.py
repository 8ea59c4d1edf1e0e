"""The runner's status lines come from the real database and say only what changed."""
from __future__ import annotations

from db.migrate import upgrade
from db.models import Job, ModelVersion, TrainingRun
from db.session import make_engine, make_session_factory
from scripts.service_state import ServiceState, ServiceWatcher, read_state


def test_read_state_from_a_migrated_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'service.db'}"
    upgrade(url)
    env = {"DATA_DIR": str(tmp_path), "DATABASE_URL": url, "APP_ENV": "development"}
    assert read_state(env) == ServiceState()
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        session.add_all([TrainingRun(status="succeeded"), TrainingRun(status="running", stage="features",
                                                                      progress=0.25),
                         Job(status="queued"), Job(status="done")])
        session.add(ModelVersion(digest="d" * 64, bundle_path="/b", manifest={}, backbone_weights="none",
                                 status="active"))
        session.commit()
    engine.dispose()
    state = read_state(env)
    assert (state.versions, state.active, state.open_runs, state.waiting_jobs) == (1, 1, (2,), 1)
    assert state.runs[2] == ("running", "features", 0.25, "")


def test_describe_reports_changes_once():
    watcher = ServiceWatcher({}, progress_every_s=60)
    old_history = ServiceState(runs={1: ("failed", "", 0.0, "boom")}, waiting_jobs=2)
    first = watcher.describe(None, old_history, now=0)
    assert first == ["2 job(s) waiting for a trained model"]  # old failures are not news
    at_start = ServiceState(runs={5: ("running", "vgg16", 0.4, "")}, open_runs=(5,))
    assert ServiceWatcher({}).describe(None, at_start, now=500) == ["training run #5: vgg16 40%"]

    running = ServiceState(runs={1: ("failed", "", 0.0, "boom"), 2: ("running", "features", 0.1, "")},
                           open_runs=(2,), waiting_jobs=2)
    assert watcher.describe(old_history, running, now=1) == ["training run #2: features 10%"]
    later = ServiceState(runs={2: ("running", "features", 0.2, "")}, open_runs=(2,), waiting_jobs=2)
    assert watcher.describe(running, later, now=30) == []  # progress lines at most once a minute
    assert watcher.describe(running, later, now=100) == ["training run #2: features 20%"]

    next_stage = ServiceState(runs={2: ("running", "svm", 0.21, "")}, open_runs=(2,), waiting_jobs=2)
    assert watcher.describe(later, next_stage, now=101) == ["training run #2: svm 21%"]  # a new stage at once

    done = ServiceState(versions=1, active=7, runs={2: ("succeeded", "done", 1.0, "")})
    assert watcher.describe(next_stage, done, now=101) == ["model version #7 is active: jobs are classified now",
                                                      "training run #2 succeeded"]
    failed = ServiceState(runs={3: ("failed", "", 0.0, "ValueError: no data")})
    assert watcher.describe(done, failed, now=102) == ["training run #3 failed: ValueError: no data"]


def _versions_with_profiles(url: str) -> None:
    upgrade(url)
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        for index, manifest in enumerate([{"profile": "quick"}, {"profile": "quick"}, {"profile": "full"}, {}]):
            session.add(ModelVersion(digest=str(index) * 64, bundle_path=f"/b{index}", manifest=manifest,
                                     backbone_weights="none", status="retired"))
        session.commit()
    engine.dispose()


def test_full_versions_leave_out_quick_ones_on_sqlite_and_postgres(tmp_path, postgres_url):
    """make run queues the full first run again while only quick versions exist."""
    for url in (f"sqlite:///{tmp_path / 'service.db'}", postgres_url):
        _versions_with_profiles(url)
        state = read_state({"DATA_DIR": str(tmp_path), "DATABASE_URL": url, "APP_ENV": "development"})
        assert (state.versions, state.full_versions) == (4, 2), url  # "full" and a manifest without profile
