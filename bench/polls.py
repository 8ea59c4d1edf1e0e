"""What one status poll costs the machine: web and database CPU per poll, with and without ETags.

    python bench/polls.py [--pollers 50] [--seconds 20] [--poll-interval 1.0] [--web-workers 2]

Starts the real web (gunicorn, as bench/service.py does) on a fresh PostgreSQL database
with one job in it, and no worker, so nothing else competes. Then `--pollers` clients
poll the job's status for `--seconds`, twice: once as plain GETs (200 with a body each
time) and once as clients that send If-None-Match with the last ETag (304 while nothing
changes). For each phase it reads the CPU time the gunicorn processes and the database's
server processes used, and prints CPU milliseconds per poll with the poll latencies, one
JSON line. That CPU is what polls take from an engine sharing the machine.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # run as a script: the repository root is not on sys.path
    sys.path.insert(0, str(REPO))

from bench.service import (DEFAULT_PG, DEFAULT_REDIS, POLL_OK, Api, free_port, percentile,  # noqa: E402
                           start_offset, start_process, tear_down, temporary_database)

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * TICK_S  # utime, stime (fields 14 and 15)


def pids_where(match: Callable[[int, str], bool]) -> list[int]:
    """Pids of the processes for which match(pid, command line) is true."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    command = handle.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if match(int(entry), command):
                found.append(int(entry))
    return found


def group_pids(pgid: int) -> list[int]:
    """Processes in a process group (gunicorn's master and its workers)."""
    return pids_where(lambda pid, _: _pgid(pid) == pgid)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def phase(port: int, token: str, path: str, pollers: int, seconds: float, interval: float,
          conditional: bool, cpu_of: dict[str, Callable[[], float]]) -> dict[str, Any]:
    """Run `pollers` clients for `seconds`; return polls, latencies and CPU ms per poll per side."""
    latencies: list[float] = []
    statuses: list[int] = []
    stop = threading.Event()

    def client(offset: float) -> None:
        api, etag = Api(port, token), None
        stop.wait(offset)
        while not stop.is_set():
            started = time.perf_counter()
            status, etag = api.poll(path, etag if conditional else None)
            latencies.append((time.perf_counter() - started) * 1000.0)
            statuses.append(status)
            stop.wait(interval)

    before = {side: read() for side, read in cpu_of.items()}
    threads = [threading.Thread(target=client, args=(start_offset(interval),), daemon=True)
               for _ in range(pollers)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    used = {side: read() - before[side] for side, read in cpu_of.items()}
    polls = len(latencies)
    latencies.sort()
    return {
        "polls": polls, "not_modified": statuses.count(304), "errors": sum(s not in POLL_OK for s in statuses),
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(percentile(latencies, 0.95), 2),
        **{f"{side}_cpu_ms_per_poll": round(1000 * value / max(polls, 1), 3) for side, value in used.items()},
        "cpu_share_of_machine": round(sum(used.values()) / seconds / os.cpu_count(), 4),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the web on a fresh database with one job; measure both polling phases."""
    from db.migrate import upgrade
    from db.models import Job
    from db.session import make_engine, make_session_factory
    from web.auth import get_or_create_user, issue_token

    work = Path(tempfile.mkdtemp(prefix="mri-polls-"))
    database_url, drop_database = temporary_database(args.postgres_url)
    database_name = database_url.rsplit("/", 1)[1]
    prefix = f"polls-{uuid.uuid4().hex[:8]}:"
    processes = []
    try:
        upgrade(database_url)
        engine = make_engine(database_url)
        with make_session_factory(engine)() as session:
            user = get_or_create_user(session, "poller", "viewer")
            token = issue_token(session, user)
            job = Job(user_id=user.id, name="polled", sealed=True, status="running", total=500, done=123)
            session.add(job)
            session.commit()
            job_id = job.id
        engine.dispose()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "BROKER_"))}
        env.update(APP_ENV="production", SECRET_KEY=secrets.token_urlsafe(32), DATABASE_URL=database_url,
                   REDIS_URL=args.redis_url, BROKER_KEY_PREFIX=prefix, DATA_DIR=str(work / "data"),
                   RETRAIN_SCHEDULE="", LOG_LEVEL="WARNING", PYTHONPATH=str(REPO))
        port = free_port()
        web = start_process(
            [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", str(args.web_workers),
             "-k", "gthread", "--threads", "16", "--log-level", "info", "web:create_app()"],
            env, work / "web.log", "Booting worker")
        processes.append(web)
        path = f"/api/v1/jobs/{job_id}"
        warm = Api(port, token)
        for _ in range(20 * args.web_workers):  # every worker imports, connects and compiles its queries
            warm.poll(path, None)

        def web_cpu() -> float:
            return sum(cpu_seconds(pid) for pid in group_pids(web.pid))

        def database_cpu() -> float:
            return sum(cpu_seconds(pid) for pid in pids_where(lambda _, cmd: f" {database_name} " in cmd))

        cpu_of = {"web": web_cpu, "database": database_cpu}
        phases = {name: phase(port, token, path, args.pollers, args.seconds, args.poll_interval, conditional,
                              cpu_of)
                  for name, conditional in (("plain", False), ("if_none_match", True))}
        return {"pollers": args.pollers, "poll_interval_s": args.poll_interval, "seconds": args.seconds,
                **phases, "web_workers": args.web_workers, "cpus": os.cpu_count(),
                "load_avg_1m": round(os.getloadavg()[0], 2)}
    finally:
        tear_down(processes, drop_database, args.redis_url, prefix, work, args.keep)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds between one poller's polls")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--postgres-url", default=DEFAULT_PG, help="server where a temporary database is made")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="keys go under a unique prefix")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
