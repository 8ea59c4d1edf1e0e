"""After a restart on a forgetful broker, open work is sent again exactly once."""
from __future__ import annotations

import json
import subprocess
import sys
from base64 import b64decode
from pathlib import Path

from db.migrate import upgrade
from db.models import Job, ModelVersion, Scan, TrainingRun
from db.session import make_engine, make_session_factory
from scripts.recover import resend_open_work

REPO = Path(__file__).resolve().parents[2]


def resend_in_fresh_process(env: dict[str, str], broker_kind: str) -> list[str]:
    """Run resend_open_work as the runner does: in its own process, whose Celery senders are fresh
    (a sender cached by another test for "filesystem://" would point at that test's folder)."""
    code = ("import json, sys; from scripts.recover import resend_open_work; "
            "print(json.dumps(resend_open_work(json.loads(sys.argv[1]), sys.argv[2])))")
    result = subprocess.run([sys.executable, "-c", code, json.dumps(env), broker_kind], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def queued_tasks(data_dir) -> list[tuple[str, list]]:
    tasks = []
    for path in sorted((data_dir / "broker" / "queue").iterdir()):
        message = json.loads(path.read_text())
        tasks.append((message["headers"]["task"], json.loads(b64decode(message["body"]))[0]))
    return tasks


def test_filesystem_broker_gets_open_runs_and_scans_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'service.db'}"
    upgrade(url)
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        session.add(ModelVersion(digest="d" * 64, bundle_path="/b", manifest={}, backbone_weights="none",
                                 status="active"))
        session.add_all([TrainingRun(status="running"), TrainingRun(status="succeeded")])
        open_job = Job(status="running", sealed=True, total=2)
        done_job = Job(status="done", sealed=True, total=1)
        session.add_all([open_job, done_job])
        session.flush()
        session.add_all([Scan(job_id=open_job.id, sha256="a" * 64, path="s/a.png", status="queued"),
                         Scan(job_id=open_job.id, sha256="b" * 64, path="s/b.png", status="classified"),
                         Scan(job_id=done_job.id, sha256="c" * 64, path="s/c.png", status="failed")])
        session.commit()
    engine.dispose()
    stale = tmp_path / "broker" / "queue"
    stale.mkdir(parents=True)
    (stale / "0_stale.inference.msg").write_text("{}")

    env = {"DATA_DIR": str(tmp_path), "DATABASE_URL": url, "BROKER_URL": "filesystem://",
           "APP_ENV": "development"}
    lines = resend_in_fresh_process(env, "filesystem")

    assert lines == ["re-sent unfinished training run(s) #1 (they restart from the beginning)",
                     "re-sent the queued scans of 1 unfinished job(s)"]
    assert sorted(queued_tasks(tmp_path)) == [("tasks.classify_batch", [[1], 1]), ("tasks.train_model", [1])]


def test_a_shared_redis_is_left_alone(tmp_path):
    assert resend_open_work({"DATA_DIR": str(tmp_path)}, "redis") == []
