"""The retraining loop on a labelled folder, in one process (SQLite, no broker): a first run, 50
of its scans classified and reviewed through the API, a second run, both gate decisions.

    python bench/retraining_loop.py /tmp/retrain-loop --data ../shared/data/brain-mri/Training \
        --image-size 64 --epochs 5 --cnn-epochs 3

Prints each run's wall time, pool summary, gate time and decision as JSON lines.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # run as a script: the repository root is not on sys.path
    sys.path.insert(0, str(REPO))


def main() -> None:
    """CLI entry point: print one JSON line per run and one for the reviews."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="a new folder for the database, blobs and bundles")
    parser.add_argument("--data", default=str(REPO.parent / "shared/data/brain-mri/Training"))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--cnn-epochs", type=int, default=3)
    parser.add_argument("--reviews", type=int, default=50)
    args = parser.parse_args()

    from bench.in_process import in_process_service, train_now
    from db.models import Job, Scan, TrainingRun
    from tasks.classify import classify_scans
    from tests.workers.jobdata import store_blob
    from training.datasets import list_labelled, read_bytes
    from web import create_app
    from web.auth import get_or_create_user, issue_token

    settings, factory = in_process_service(args.out, args.data)
    params = {"image_size": args.image_size, "epochs": args.epochs, "cnn_epochs": args.cnn_epochs,
              "backbone_weights": "none"}

    def train(name: str) -> dict:
        run_id, seconds = train_now(factory, settings, params)
        with factory() as session:
            run = session.get(TrainingRun, run_id)
            gate_s = _gate_seconds(run.log)
            report = {"run": name, "status": run.status, "error": run.error, "wall_s": round(seconds),
                      "gate_s": gate_s, "data_summary": run.data_summary,
                      "decision": {k: v for k, v in (run.decision or {}).items() if k not in ("candidate", "active")},
                      "candidate": _short(run.decision and run.decision["candidate"]),
                      "active": _short(run.decision and run.decision["active"])}
        print(json.dumps(report), flush=True)
        return report

    train("first")
    # 50 folder scans, uploaded as a job, classified by the active version, reviewed with their folder label.
    items = list_labelled(args.data)
    chosen = random.Random(9).sample(items, args.reviews)
    with factory() as session:
        job = Job(source="measure", name="reviewed", sealed=True, total=len(chosen))
        session.add(job)
        session.flush()
        for item in chosen:
            session.add(Scan(job_id=job.id, sha256=store_blob(settings, read_bytes(item)), path=item.source))
        session.commit()
        scans = [(s.id, s.path) for s in job.scans]
        from tasks.versions import active_version

        version_id = active_version(session).id
    classify_scans(factory, settings, [i for i, _ in scans], version_id)
    app = create_app({"env": "test", "database_url": settings.database_url, "data_dir": settings.data_dir,
                      "log_level": "WARNING"})
    with factory() as session:
        token = issue_token(session, get_or_create_user(session, "reviewer", "reviewer"))
        session.commit()
    client, headers = app.test_client(), {"Authorization": f"Bearer {token}"}
    label_of = {item.source: item.label for item in chosen}
    for scan_id, path in scans:
        response = client.post(f"/api/v1/scans/{scan_id}/review", json={"label": label_of[path]}, headers=headers)
        assert response.status_code == 201, response.get_json()
    disagree = client.get("/api/v1/results?disagrees=true&per_page=1", headers=headers).get_json()["total"]
    print(json.dumps({"reviewed": len(scans), "reviewed_label_differs_from_ensemble": disagree}), flush=True)
    train("second")


def _gate_seconds(log: str) -> float | None:
    """Seconds from the bundle saved to the [gate] line of a run's log (HH:MM:SS stamps)."""
    def seconds(line: str) -> int:
        h, m, s = (int(x) for x in line[:8].split(":"))
        return h * 3600 + m * 60 + s
    lines = (log or "").splitlines()
    saved = [line for line in lines if "[save]" in line]
    gate = [line for line in lines if "[gate]" in line]
    return seconds(gate[-1]) - seconds(saved[-1]) if saved and gate else None


def _short(figures: dict | None) -> dict | None:
    if not figures:
        return None
    return {k: figures.get(k) for k in ("version", "accuracy", "macro_f1", "size", "error") if k in figures}


if __name__ == "__main__":
    main()
