"""A whole worker killed mid-job, twice, as an operator would meet it: how long until the job is done.

    python bench/recovery.py [--data DIR] [--scans 400] [--kills 2] [--lease-s 60]

Starts the real service with the settings a person would use (gunicorn web, one solo
Celery worker on all queues, beat; PostgreSQL and Redis), uploads `--scans` scans over
HTTP, and `kill -9`s the worker's whole process group once a quarter and once three
fifths of them are classified, starting a new worker each time. Measures, after each
kill, how long the new worker took to start and how long until the stranded scans were
classified; checks in the database that every scan was classified exactly once. Prints
one JSON line; exits 1 when a check fails.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # run as a script: the repository root is not on sys.path
    sys.path.insert(0, str(REPO))

from bench.load import DEFAULT_REDIS, VENV_BIN, check_database  # noqa: E402
from bench.service import (DEFAULT_DATA, DEFAULT_PG, Api, free_port, pick_files,  # noqa: E402
                           start_process, tear_down, temporary_database)


def held_scans(database_url: str, job_id: int) -> list[int]:
    """Ids of the job's queued scans that a worker holds a lease on (stranded by a kill)."""
    from sqlalchemy import select

    from db.models import Scan
    from db.session import make_engine, make_session_factory

    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            return list(session.scalars(select(Scan.id).where(
                Scan.job_id == job_id, Scan.status == "queued", Scan.lease_owner.is_not(None))))
    finally:
        engine.dispose()


def last_classified(database_url: str, scan_ids: list[int]) -> float | None:
    """Wall-clock time (epoch seconds) the last of these scans was classified."""
    from sqlalchemy import func, select

    from db.models import Scan
    from db.session import make_engine, make_session_factory

    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            moment = session.scalar(select(func.max(Scan.classified_at)).where(Scan.id.in_(scan_ids)))
    finally:
        engine.dispose()
    return moment.timestamp() if moment is not None else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the service, upload, kill and restart the worker, wait; return the JSON record."""
    from db.migrate import upgrade
    from db.session import make_engine, make_session_factory
    from tasks.versions import activate_version, register_bundle
    from web.auth import get_or_create_user, issue_token

    work = Path(tempfile.mkdtemp(prefix="mri-recovery-"))
    bundle = Path(args.bundle) if args.bundle else None
    if bundle is None:
        from tests.helpers.tiny_bundle import make_tiny_bundle  # fresh weights: timing does not depend on them

        bundle = make_tiny_bundle(work / "bundle", image_size=args.image_size)
    database_url, drop_database = temporary_database(args.postgres_url)
    prefix = f"recovery-{uuid.uuid4().hex[:8]}:"
    processes: dict[str, Any] = {}
    try:
        upgrade(database_url)
        engine = make_engine(database_url)
        with make_session_factory(engine)() as session:
            activate_version(session, register_bundle(session, bundle))
            token = issue_token(session, get_or_create_user(session, "operator", "uploader"))
            session.commit()
        engine.dispose()
        env = {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
               "APP_ENV": "production", "SECRET_KEY": secrets.token_urlsafe(32), "DATABASE_URL": database_url,
               "REDIS_URL": args.redis_url, "BROKER_KEY_PREFIX": prefix, "DATA_DIR": str(work / "data"),
               "RETRAIN_SCHEDULE": "", "LOG_LEVEL": "INFO", "TF_CPP_MIN_LOG_LEVEL": "2",
               "SCAN_LEASE_S": str(args.lease_s), "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow")}
        port = free_port()
        processes["web"] = start_process(
            [str(VENV_BIN / "gunicorn"), "-b", f"127.0.0.1:{port}", "-w", "2", "web:create_app()"], env,
            work / "web.log", "Booting worker")
        processes["beat"] = start_process(
            [str(VENV_BIN / "celery"), "-A", "workers", "beat", "--schedule", str(work / "beat-schedule"),
             "--loglevel", "INFO"],
            env, work / "beat.log", "beat: Starting")

        def start_worker(n: int):
            return start_process([str(VENV_BIN / "celery"), "-A", "workers", "worker", "-Q",
                                  "inference,training,default", "--pool", "solo", "-n", f"w{n}@%h",
                                  "--loglevel", "INFO"],
                                 env, work / f"worker{n}.log", " ready.")

        processes["worker"] = start_worker(0)
        files = pick_files(Path(args.data), args.scans)
        api = Api(port, token)
        job_id = api.upload([(f"study-{i % 8}/{p.parent.name}-{p.name}", p.read_bytes())
                             for i, p in enumerate(files)])
        started = time.perf_counter()
        kills = []
        for n, fraction in enumerate((0.25, 0.6)[:args.kills], start=1):
            while api.request("GET", f"/api/v1/jobs/{job_id}")[1]["done"] < fraction * args.scans:
                time.sleep(0.1)
            os.killpg(processes["worker"].pid, signal.SIGKILL)
            processes["worker"].wait()
            killed = time.perf_counter()
            done_at_kill = api.request("GET", f"/api/v1/jobs/{job_id}")[1]["done"]
            stranded = held_scans(database_url, job_id)
            processes["worker"] = start_worker(n)
            kills.append({"done_at_kill": done_at_kill, "leased_scans_stranded": len(stranded),
                          "new_worker_start_s": round(time.perf_counter() - killed, 1),
                          "_ready": time.time(), "_stranded": stranded})
        final = api.wait_done(job_id, args.timeout, interval=0.2)
        finished, finished_wall = time.perf_counter(), time.time()
        for kill in kills:
            ready, stranded = kill.pop("_ready"), kill.pop("_stranded")
            last = last_classified(database_url, stranded) if stranded else None
            # From the new worker being ready to the last scan this kill stranded being classified.
            kill["stranded_classified_s_after_new_worker"] = round(last - ready, 1) if last else None
            kill["job_done_s_after_new_worker"] = round(finished_wall - ready, 1)
        checks = check_database(database_url, [job_id])
        return {"scans": args.scans, "scan_lease_s": args.lease_s, "kills": kills,
                "job_wall_s": round(finished - started, 1), "classified": final["done"],
                "failed": final["failed"], **checks}
    finally:
        tear_down(list(processes.values()), drop_database, args.redis_url, prefix, work, args.keep)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: print one JSON line; exit 1 when a check fails."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder of scans (searched recursively)")
    parser.add_argument("--scans", type=int, default=400)
    parser.add_argument("--kills", type=int, default=2, choices=[1, 2])
    parser.add_argument("--lease-s", type=int, default=60, help="SCAN_LEASE_S of the service")
    parser.add_argument("--image-size", type=int, default=128, help="for the fresh-weights bundle")
    parser.add_argument("--bundle", help="a trained bundle instead of fresh weights")
    parser.add_argument("--postgres-url", default=DEFAULT_PG, help="server where a temporary database is made")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="keys go under a unique prefix")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    record = run(args)
    print(json.dumps(record))
    ok = (record["jobs_done"] == 1 and record["classified"] + record["failed"] == args.scans
          and record["queued"] == 0 and record["scans_without_exactly_one_prediction_set"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
