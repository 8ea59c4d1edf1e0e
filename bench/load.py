"""Concurrent uploads while many clients poll: nothing lost or doubled, polls stay fast, no 5xx.

    python bench/load.py [--data DIR] [--uploads 10] [--files 100] [--pollers 50]
                         [--image-size 128] [--bundle DIR]

Starts the real service (gunicorn web, one solo Celery worker, beat) on Redis and a
fresh PostgreSQL database, then sends `--uploads` jobs of `--files` scans each at the
same time while `--pollers` clients poll the jobs' status once a second. Waits until
every job is done and checks in the database that each scan was classified (or failed)
exactly once. Pollers send If-None-Match with the last ETag of each job, as a browser
does, so an unchanged status answers 304. Prints one JSON line: per-upload request times,
poll latency p50/p95/max, 5xx answers, and the checks.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import secrets
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # run as a script: the repository root is not on sys.path
    sys.path.insert(0, str(REPO))

from bench.service import (DEFAULT_DATA, DEFAULT_PG, POLL_OK, Api, free_port, percentile, pick_files,  # noqa: E402
                           start_offset, start_process, tear_down, temporary_database)

DEFAULT_REDIS = "redis://127.0.0.1:6379/14"
VENV_BIN = Path(sys.executable).parent


def poll_jobs(port: int, token: str, job_ids: list[int], interval: float, stop: threading.Event,
              latencies: list[float], statuses: list[int]) -> None:
    """One client polling the jobs' status in turn, `interval` seconds apart, recording each answer;
    it keeps each job's last ETag and sends it as If-None-Match."""
    api, turn, etags = Api(port, token), 0, {}
    stop.wait(start_offset(interval))
    while not stop.is_set():
        if not job_ids:
            stop.wait(0.05)
            continue
        job_id = job_ids[turn % len(job_ids)]
        turn += 1
        started = time.perf_counter()
        try:
            status, etags[job_id] = api.poll(f"/api/v1/jobs/{job_id}", etags.get(job_id))
        except Exception:  # noqa: BLE001 - a failed poll is a measured outcome
            status = 599
        latencies.append((time.perf_counter() - started) * 1000.0)
        statuses.append(status)
        stop.wait(interval)


def check_database(database_url: str, job_ids: list[int]) -> dict[str, Any]:
    """Per job: scans, classified, failed; and whether any scan has other than one full prediction set."""
    from sqlalchemy import func, select

    from db.models import Job, Prediction, Scan
    from db.session import make_engine, make_session_factory

    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            jobs = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(job_ids)))}
            per_scan = dict(session.execute(
                select(Scan.id, func.count(Prediction.id)).outerjoin(Prediction, Prediction.scan_id == Scan.id)
                .where(Scan.job_id.in_(job_ids)).group_by(Scan.id)).all())
            statuses = dict(session.execute(select(Scan.id, Scan.status).where(Scan.job_id.in_(job_ids))).all())
    finally:
        engine.dispose()
    wrong = [scan_id for scan_id, count in per_scan.items()
             if (statuses[scan_id] == "classified" and count != 6) or (statuses[scan_id] != "classified" and count)]
    return {"jobs_done": sum(job.status == "done" for job in jobs.values()),
            "scans": len(per_scan), "classified": sum(s == "classified" for s in statuses.values()),
            "failed": sum(s == "failed" for s in statuses.values()),
            "queued": sum(s == "queued" for s in statuses.values()),
            "scans_without_exactly_one_prediction_set": len(wrong)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the service, run the load, stop it; return the JSON record."""
    from db.migrate import upgrade
    from db.session import make_engine, make_session_factory
    from tasks.versions import activate_version, register_bundle
    from web.auth import get_or_create_user, issue_token

    work = Path(tempfile.mkdtemp(prefix="mri-load-"))
    bundle = Path(args.bundle) if args.bundle else None
    if bundle is None:
        from tests.helpers.tiny_bundle import make_tiny_bundle  # fresh weights: speed does not depend on them

        bundle = make_tiny_bundle(work / "bundle", image_size=args.image_size)
    database_url, drop_database = temporary_database(args.postgres_url)
    prefix = f"load-{uuid.uuid4().hex[:8]}:"
    processes = []
    try:
        upgrade(database_url)
        engine = make_engine(database_url)
        with make_session_factory(engine)() as session:
            activate_version(session, register_bundle(session, bundle))
            token = issue_token(session, get_or_create_user(session, "load", "uploader"))
            session.commit()
        engine.dispose()
        # What a person sets in a plain shell: the settings, and the virtualenv first on PATH.
        env = {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
               "APP_ENV": "production", "SECRET_KEY": secrets.token_urlsafe(32), "DATABASE_URL": database_url,
               "REDIS_URL": args.redis_url, "BROKER_KEY_PREFIX": prefix, "DATA_DIR": str(work / "data"),
               "RETRAIN_SCHEDULE": "", "LOG_LEVEL": "WARNING", "TF_CPP_MIN_LOG_LEVEL": "2",
               "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow"), "MAX_UPLOAD_MB": "512"}
        port = free_port()
        processes.append(start_process(
            [str(VENV_BIN / "gunicorn"), "-b", f"127.0.0.1:{port}", "-w", str(args.web_workers), "-k", "gthread",
             "--threads", "16", "--log-level", "info", "web:create_app()"], env, work / "web.log", "Booting worker"))
        processes.append(start_process(
            [str(VENV_BIN / "celery"), "-A", "workers", "worker", "-Q", "inference,training,default", "--pool",
             "solo", "--loglevel", "INFO", "-n", f"load-{uuid.uuid4().hex[:6]}@%h"], env, work / "worker.log",
            " ready."))
        processes.append(start_process(
            [str(VENV_BIN / "celery"), "-A", "workers", "beat", "--schedule", str(work / "beat-schedule"),
             "--loglevel", "INFO"], env, work / "beat.log", "beat: Starting"))
        files = pick_files(Path(args.data), args.uploads * args.files)
        uploads = [[(f"study-{u:02d}/{p.parent.name}-{p.name}", p.read_bytes())
                    for p in files[u * args.files:(u + 1) * args.files]] for u in range(args.uploads)]
        job_ids: list[int] = []
        latencies: list[float] = []
        statuses: list[int] = []
        stop = threading.Event()
        pollers = [threading.Thread(target=poll_jobs, args=(port, token, job_ids, args.poll_interval, stop,
                                                            latencies, statuses), daemon=True)
                   for _ in range(args.pollers)]
        for thread in pollers:
            thread.start()
        upload_times: list[float] = []
        upload_errors: list[str] = []

        def upload(batch: list[tuple[str, bytes]]) -> None:
            started = time.perf_counter()
            try:
                job_ids.append(Api(port, token).upload(batch))
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                upload_errors.append(repr(exc)[:300])
            upload_times.append(time.perf_counter() - started)

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.uploads) as pool:
            list(pool.map(upload, uploads))
        waiter = Api(port, token)
        for job_id in list(job_ids):
            waiter.wait_done(job_id, args.timeout - (time.perf_counter() - started), interval=0.2)
        wall = time.perf_counter() - started
        stop.set()
        for thread in pollers:
            thread.join(timeout=10)
        checks = check_database(database_url, job_ids)
        p95 = percentile(latencies, 0.95)
        return {
            "uploads": args.uploads, "files_per_upload": args.files, "jobs_created": len(job_ids),
            "upload_errors": upload_errors, "upload_s_max": round(max(upload_times), 2),
            "upload_s_median": round(statistics.median(upload_times), 2), "wall_s": round(wall, 2),
            **checks, "pollers": args.pollers, "polls": len(latencies),
            "poll_5xx": sum(500 <= s < 600 for s in statuses),
            "polls_not_modified": statuses.count(304),
            "poll_non_200": sum(s not in POLL_OK for s in statuses),
            "poll_p50_ms": round(percentile(latencies, 0.5), 2) if latencies else None,
            "poll_p95_ms": round(p95, 2) if p95 is not None else None,
            "poll_max_ms": round(max(latencies), 2) if latencies else None,
            "image_size": args.image_size if not args.bundle else None,
            "machine": f"{platform.machine()} {os.cpu_count()} cpus", "web_workers": args.web_workers,
        }
    finally:
        tear_down(list(processes), drop_database, args.redis_url, prefix, work, args.keep)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: print one JSON line; exit 1 when a check fails."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder of scans (searched recursively)")
    parser.add_argument("--uploads", type=int, default=10, help="jobs uploaded at the same time")
    parser.add_argument("--files", type=int, default=100, help="scans per upload")
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds between one poller's polls")
    parser.add_argument("--image-size", type=int, default=128, help="for the fresh-weights bundle")
    parser.add_argument("--bundle", help="a trained bundle instead of fresh weights")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--postgres-url", default=DEFAULT_PG, help="server where a temporary database is made")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="keys go under a unique prefix")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    record = run(args)
    print(json.dumps(record))
    expected = args.uploads * args.files
    ok = (not record["upload_errors"] and record["jobs_done"] == args.uploads and record["scans"] == expected
          and record["queued"] == 0 and record["scans_without_exactly_one_prediction_set"] == 0
          and record["poll_5xx"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
