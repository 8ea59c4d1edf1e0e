"""Whole-service throughput vs the engine's own in-process batched rate, plus status-poll latency.

    python -m bench.service [--data DIR] [--scans 500] [--batch-size 32] [--image-size 128]
                            [--bundle DIR] [--pollers 50] [--poll-interval 1.0] [--watch poll|stream]
                            [--part-files 50]

Starts a real web server (gunicorn), a real Celery worker (solo pool) on Redis,
and a fresh PostgreSQL database; sends the scans the way `mri-classify submit` does
(parts of `--part-files` to an open job, then sealing it; `--part-files 0` sends
them in one request) and measures from the first byte sent to the moment the service
recorded the job finished (its `finished` time, so the bench's own watching costs one
poll a second, not a busy loop), while `--pollers` threads poll the job's status the
way a client does (If-None-Match with the last ETag, so an unchanged status is a 304),
or with `--watch stream` hold the job's event stream as its page does.
The engine alone (same bundle, precision, batch size, same scans, already decoded)
runs in this process before and after the service, and the better of the two is
the reference: other processes on the machine can only slow a sample down. The
image size is the bundle's own, else the default recipe's (128 px); the record says
which. It also reads the worker's resident memory: after loading the bundle and a
warm-up job, and its peak during the measured job. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import platform
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "brain-mri" / "Training"
DEFAULT_PG = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DEFAULT_REDIS = "redis://127.0.0.1:6379/14"
SUFFIXES = {".jpg", ".jpeg", ".png", ".dcm", ".bmp", ".tif", ".tiff"}
logger = logging.getLogger("bench.service")


def pick_files(root: Path, count: int, skip: int = 0) -> list[Path]:
    """`count` scan files spread evenly over a folder tree (deterministic), after `skip` of them."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    if len(files) < count + skip:
        raise SystemExit(f"{root} holds {len(files)} scan files; {count + skip} needed")
    step = len(files) / (count + skip)
    chosen = [files[int(i * step)] for i in range(count + skip)]
    return chosen[skip:] + chosen[:skip]


def free_port() -> int:
    """An unused local TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body with `files` parts and a parallel `paths` field."""
    boundary = uuid.uuid4().hex
    parts = []
    for path, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                     f'filename="{Path(path).name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
                     + data + b"\r\n")
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="paths"\r\n\r\n{path}\r\n'.encode())
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class Api:
    """Tiny HTTP client for the service's JSON API (one connection per instance)."""

    def __init__(self, port: int, token: str) -> None:
        """Connect to 127.0.0.1:`port` with a bearer token."""
        self.port, self.headers = port, {"Authorization": f"Bearer {token}"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def send(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any, http.client.HTTPMessage]:
        """Send one request; return (status, parsed JSON or None, response headers)."""
        headers = {**self.headers, **(headers or {})}
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        except (http.client.HTTPException, OSError):
            self.conn.close()  # a dropped keep-alive connection: reconnect once
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None, response.headers

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str | None = None) -> tuple[int, Any]:
        """Send one request; return (status, parsed JSON)."""
        status, answer, _ = self.send(method, path, body, {"Content-Type": content_type} if content_type else None)
        return status, answer

    def poll(self, path: str, etag: str | None) -> tuple[int, str | None]:
        """GET a status like a client that keeps the last answer: If-None-Match with its ETag.

        Returns (HTTP status, the ETag to send next time); 304 means unchanged, no body.
        """
        status, _, headers = self.send("GET", path, headers={"If-None-Match": etag} if etag else None)
        return status, headers.get("ETag") or etag

    def upload(self, files: list[tuple[str, bytes]]) -> int:
        """POST a job; return its id."""
        body, content_type = multipart(files)
        status, answer = self.request("POST", "/api/v1/jobs", body, content_type)
        if status != 202:
            raise RuntimeError(f"upload failed: {status} {answer}")
        return int(answer["id"])

    def wait_done(self, job_id: int, timeout: float, interval: float = 0.1) -> dict:
        """Poll a job like a client (If-None-Match with the last ETag) until done; return its last status."""
        deadline = time.monotonic() + timeout
        answer: Any = None
        etag = None
        while True:
            status, body, headers = self.send("GET", f"/api/v1/jobs/{job_id}",
                                              headers={"If-None-Match": etag} if etag else None)
            if status == 200:
                answer, etag = body, headers.get("ETag")
                if answer["status"] == "done":
                    return answer
            elif status != 304:
                raise RuntimeError(f"job {job_id}: HTTP {status} {body}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not done after {timeout:.0f} s: {answer}")
            time.sleep(interval)


def send_like_client(port: int, token: str, files: list[tuple[str, Path]], part_files: int,
                     on_job: Callable[[int], None]) -> int:
    """Send `files` (relative path, file) as `mri-classify submit` does: parts of `part_files` to an
    open job, which the worker starts on while the rest uploads, then seal it; return the job id."""
    from client.api import Api as ClientApi
    from client.files import LocalFile
    from client.upload import Uploader

    api = ClientApi(f"http://127.0.0.1:{port}", token)
    local = [LocalFile(path=name, source=path, size=path.stat().st_size) for name, path in files]
    uploader = Uploader(api, part_files=part_files, part_mb=max(16.0, sum(f.size for f in local) / 2**20))
    outcome = uploader.send(local, None, on_job)
    if outcome.refused or outcome.sent != len(local):
        raise RuntimeError(f"upload incomplete: {outcome}")
    uploader.close(outcome.job)
    return outcome.job


def finished_at(status: dict) -> float:
    """The POSIX time at which the service recorded the job finished."""
    from datetime import datetime

    return datetime.fromisoformat(status["finished"].replace("Z", "+00:00")).timestamp()


POLL_OK = (200, 304)
_offsets = random.Random(0)


def start_offset(interval: float) -> float:
    """When a poller starts within its first interval: people open status pages at different
    moments, so their polls are spread out, not fired in one burst each second."""
    return _offsets.uniform(0.0, interval)


def poller(port: int, token: str, job_id: int, interval: float, stop: threading.Event,
           latencies: list[float], errors: list[str], statuses: list[int]) -> None:
    """Poll a job's status like a status page does (If-None-Match), recording each answer."""
    api, etag = Api(port, token), None
    stop.wait(start_offset(interval))
    while not stop.is_set():
        started = time.perf_counter()
        try:
            status, etag = api.poll(f"/api/v1/jobs/{job_id}", etag)
        except Exception as exc:  # noqa: BLE001 - a failed poll is a measured outcome
            errors.append(repr(exc))
            continue
        latencies.append((time.perf_counter() - started) * 1000.0)
        statuses.append(status)
        if status not in POLL_OK:
            errors.append(f"HTTP {status}")
        stop.wait(interval)


def watcher(port: int, token: str, job_id: int, interval: float, stop: threading.Event,
            record: dict[str, list]) -> None:
    """Watch a job like its status page does: hold its event stream (GET .../events) and note when
    the first status and the final one arrive; where the stream is refused (503), poll instead."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    stop.wait(start_offset(interval))
    opened = time.perf_counter()
    try:
        conn.request("GET", f"/api/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        if response.status != 200:
            response.read()
            record["refused"].append(response.status)
            poller(port, token, job_id, interval, stop, record["latencies"], record["errors"], record["statuses"])
            return
        name, data, first = None, None, True
        while not stop.is_set():
            line = response.readline()
            if not line:
                break
            line = line.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and name:
                if name == "status" and first:
                    first = False
                    record["first_event_ms"].append((time.perf_counter() - opened) * 1000.0)
                if name == "status" and data["status"] == "done":
                    record["done_lag_ms"].append((time.time() - finished_at(data)) * 1000.0)
                    break
                name, data = None, None
    except Exception as exc:  # noqa: BLE001 - a failed stream is a measured outcome
        record["errors"].append(repr(exc))
    finally:
        conn.close()


def start_process(command: list[str], env: dict[str, str], log: Path, ready: str, timeout: float = 180
                  ) -> subprocess.Popen:
    """Start a service process and wait for `ready` in its log."""
    handle = open(log, "w")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + timeout
    while ready not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError(f"{command[2:5]} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return process


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM the process group we started, then SIGKILL if needed."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def tear_down(processes, drop_database, redis_url: str, prefix: str, work: Path, keep: bool) -> None:
    """Stop the service processes, drop the temporary database, delete the run's Redis keys and,
    unless `keep`, its folder."""
    import shutil

    import redis

    for process in processes:
        stop_process(process)
    drop_database()
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()
    if not keep:
        shutil.rmtree(work, ignore_errors=True)


def temporary_database(admin_url: str) -> tuple[str, Any]:
    """Create an empty PostgreSQL database; return (url, drop function)."""
    from sqlalchemy import create_engine

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"mri_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    return admin_url.rsplit("/", 1)[0] + f"/{name}", drop


class EngineAlone:
    """The engine in this process on the run's scans, already decoded: the rate to compare with."""

    def __init__(self, bundle: Path, precision: str, batch_size: int, blobs: list[bytes], image_size: int) -> None:
        """Load the bundle, decode the scans and warm the engine up (tracing, first-call allocation)."""
        from models.engine import InferenceEngine

        self.engine = InferenceEngine.from_bundle(bundle, precision=precision, batch_size=batch_size)
        self.batch_size = batch_size
        self.image_size = image_size
        self.blobs = blobs
        self.images = self._decode()
        self.engine.classify(self.images[:batch_size])

    def _decode(self) -> list:
        from training.decode import DecodeError, decode_bytes

        images = []
        for data in self.blobs:
            try:
                images.append(decode_bytes(data, target_size=self.image_size)[0].image)
            except DecodeError:
                continue
        return images

    def rate(self) -> float:
        """Scans/s of InferenceEngine.classify on every image, in batches."""
        started = time.perf_counter()
        for start in range(0, len(self.images), self.batch_size):
            self.engine.classify(self.images[start:start + self.batch_size])
        return len(self.images) / (time.perf_counter() - started)

    def rate_with_decoding(self) -> tuple[float, float]:
        """(scans/s, decode ms per scan) of decoding every file as the worker does, then
        classifying: the work the service cannot avoid on the same cores, one after the other."""
        started = time.perf_counter()
        images = self._decode()
        decoded = time.perf_counter()
        for start in range(0, len(images), self.batch_size):
            self.engine.classify(images[start:start + self.batch_size])
        return len(images) / (time.perf_counter() - started), (decoded - started) * 1000 / max(len(images), 1)


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of `values` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, int(round(fraction * len(ordered))) - 1)]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _stream_figures(streams: dict[str, list]) -> dict[str, Any]:
    """What the stream watchers saw: how many streamed, how soon the first status came, and how
    long after the service recorded the job finished each heard so."""
    return {"streams_opened": len(streams["first_event_ms"]), "streams_refused": len(streams["refused"]),
            "first_event_p50_ms": _ms(percentile(streams["first_event_ms"], 0.5)),
            "first_event_p95_ms": _ms(percentile(streams["first_event_ms"], 0.95)),
            "done_heard": len(streams["done_lag_ms"]),
            "done_lag_p50_ms": _ms(percentile(streams["done_lag_ms"], 0.5)),
            "done_lag_p95_ms": _ms(percentile(streams["done_lag_ms"], 0.95))}


def _mib_to_gib(value: float | None) -> float | None:
    return None if value is None else round(value / 1024, 2)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole measurement; return the JSON record."""
    from db.migrate import upgrade
    from db.session import make_engine, make_session_factory
    from bench.memory import process_memory, reset_peak
    from bench.sizes import resolve_image_size
    from tasks import runtime
    from tasks.versions import activate_version, register_bundle

    load_before = os.getloadavg()[0]
    precision = runtime.resolve_precision(args.precision)
    image_size, size_source = resolve_image_size(args.image_size, args.bundle)
    work = Path(tempfile.mkdtemp(prefix="mri-bench-"))
    data_dir = work / "data"
    bundle = Path(args.bundle) if args.bundle else None
    if bundle is None:
        from tests.helpers.tiny_bundle import make_tiny_bundle  # fresh weights: speed does not depend on them

        bundle = make_tiny_bundle(work / "bundle", image_size=image_size)
    database_url, drop_database = temporary_database(args.postgres_url)
    # A key prefix of its own: other services or test runs may share this Redis db.
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    processes: list[subprocess.Popen] = []
    try:
        upgrade(database_url)
        engine = make_engine(database_url)
        factory = make_session_factory(engine)
        from web.auth import get_or_create_user, issue_token

        with factory() as session:
            activate_version(session, register_bundle(session, bundle))
            token = issue_token(session, get_or_create_user(session, "bench", "admin"))
            session.commit()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "BROKER_"))}
        env.update(APP_ENV="production", SECRET_KEY=secrets.token_urlsafe(32), DATABASE_URL=database_url,
                   REDIS_URL=args.redis_url, BROKER_KEY_PREFIX=prefix, DATA_DIR=str(data_dir), INFERENCE_BATCH_SIZE=str(args.batch_size),
                   INFERENCE_PRECISION=precision, RETRAIN_SCHEDULE="", LOG_LEVEL="WARNING",
                   KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "tensorflow"), TF_CPP_MIN_LOG_LEVEL="2",
                   PYTHONPATH=str(REPO), MAX_UPLOAD_MB="2048")
        port = free_port()
        processes.append(start_process(
            [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", str(args.web_workers),
             "-k", "gthread", "--threads", str(args.web_threads), "-c", "python:web.gunicorn_config", "--log-level", "info",
             "web:create_app()"], env, work / "web.log", "Booting worker"))
        worker = start_process(
            [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "inference,training,default",
             "--pool", args.worker_pool, "-c", str(args.worker_concurrency), "--loglevel", "INFO",
             "-n", f"bench-{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle"], env, work / "worker.log", " ready.")
        processes.append(worker)
        paths = pick_files(Path(args.data), args.scans, skip=args.batch_size)
        warm_paths, measured = paths[args.scans:], paths[:args.scans]
        blobs = [(f"{p.parent.name}/{p.name}", p.read_bytes()) for p in measured]
        # The engine alone, first sample: before the service runs, so a busy spell on a shared
        # machine during one sample does not decide the reference.
        alone = EngineAlone(bundle, precision, args.batch_size, [b for _, b in blobs], image_size)
        engine_runs = [alone.rate()]
        decoding_runs = [alone.rate_with_decoding()]
        api = Api(port, token)
        # Warm the worker (TF import, bundle load, tracing) on other scans before timing.
        api.wait_done(api.upload([(f"warm/{p.name}", p.read_bytes()) for p in warm_paths]), 900)
        # A solo pool runs tasks in the worker process itself: its memory is the engine's.
        worker_loaded = process_memory(worker.pid)
        peak_reset = reset_peak(worker.pid)
        latencies: list[float] = []
        errors: list[str] = []
        statuses: list[int] = []
        stop = threading.Event()
        threads: list[threading.Thread] = []
        streams: dict[str, list] = {"latencies": latencies, "errors": errors, "statuses": statuses, "refused": [],
                                    "first_event_ms": [], "done_lag_ms": []}

        def start_pollers(job_id: int) -> None:
            # As soon as the job exists, as people open its page while the upload goes on.
            if args.watch == "stream":
                threads.extend(threading.Thread(target=watcher, args=(port, token, job_id, args.poll_interval,
                                                                      stop, streams), daemon=True)
                               for _ in range(args.pollers))
            else:
                threads.extend(threading.Thread(target=poller, args=(port, token, job_id, args.poll_interval,
                                                                      stop, latencies, errors, statuses), daemon=True)
                               for _ in range(args.pollers))
            for thread in threads:
                thread.start()

        started_at, started = time.time(), time.perf_counter()
        if args.part_files:
            job_id = send_like_client(port, token, [(name, path) for (name, _), path in zip(blobs, measured)],
                                      args.part_files, start_pollers)
        else:
            job_id = api.upload(blobs)
            start_pollers(job_id)
        uploaded = time.perf_counter() - started
        # The bench watches like a client (a poll a second with the ETag); the time is the
        # service's own record of when the job finished, so watching does not load the machine.
        final = api.wait_done(job_id, args.timeout, interval=1.0)
        seen = time.perf_counter() - started
        wall = finished_at(final) - started_at
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        worker_job = process_memory(worker.pid)
        for process in processes:
            stop_process(process)
        processes.clear()
        engine.dispose()
        engine_runs.append(alone.rate())
        decoding_runs.append(alone.rate_with_decoding())
        in_process = max(engine_runs)
        with_decoding = max(rate for rate, _ in decoding_runs)
        service = final["done"] / wall
        return {
            "scans": len(blobs), "classified": final["done"], "failed": final["failed"],
            "batch_size": args.batch_size, "image_size": image_size, "image_size_source": size_source,
            "precision": precision,
            "upload": f"parts of {args.part_files} to an open job" if args.part_files else "one request",
            "service_wall_s": round(wall, 2), "upload_s": round(uploaded, 2), "seen_done_s": round(seen, 2),
            "service_scans_per_s": round(service, 3), "engine_scans_per_s": round(in_process, 3),
            "service_vs_engine": round(service / in_process, 3),
            "engine_runs": [round(r, 3) for r in engine_runs],
            # What decoding alone leaves of the engine's rate on these cores: the service decodes
            # every file too, so service / this says how close it comes to what is attainable.
            "engine_with_decoding_scans_per_s": round(with_decoding, 3),
            "engine_with_decoding_vs_engine": round(with_decoding / in_process, 3),
            "service_vs_engine_with_decoding": round(service / with_decoding, 3),
            "decode_ms_per_scan": round(min(ms for _, ms in decoding_runs), 2),
            "pollers": args.pollers, "watch": args.watch, "poll_interval_s": args.poll_interval,
            **(_stream_figures(streams) if args.watch == "stream" else {}),
            "polls": len(latencies),
            "polls_not_modified": statuses.count(304), "poll_errors": len(errors),
            "poll_p50_ms": round(statistics.median(latencies), 2) if latencies else None,
            "poll_p95_ms": _ms(percentile(latencies, 0.95)),
            "poll_max_ms": round(max(latencies), 2) if latencies else None,
            # VmRSS after the bundle loaded and a warm-up job; VmHWM (peak) through the measured
            # job, restarted before it where the kernel allows, else the peak since the worker started.
            "worker_rss_loaded_gib": _mib_to_gib(worker_loaded.get("VmRSS")),
            "worker_peak_job_gib": _mib_to_gib(worker_job.get("VmHWM")),
            "worker_peak_since": "job start" if peak_reset else "worker start",
            "machine": f"{platform.machine()} {os.cpu_count()} cpus", "web_workers": args.web_workers,
            "worker_pool": args.worker_pool, "worker_concurrency": args.worker_concurrency,
            "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }
    finally:
        tear_down(processes, drop_database, args.redis_url, prefix, work, args.keep)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: print one JSON line."""
    from client.upload import DEFAULT_PART_FILES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder of scans (searched recursively)")
    parser.add_argument("--scans", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=None,
                        help="fresh-weights bundle size (default: the default recipe's, 128; 224 is the "
                             "reference's); with --bundle only the bundle's own")
    parser.add_argument("--bundle", help="a trained bundle instead of fresh weights")
    parser.add_argument("--precision", default=os.environ.get("INFERENCE_PRECISION", "auto"),
                        choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--part-files", type=int, default=DEFAULT_PART_FILES,
                        help="files per upload request, as `mri-classify submit --part-files`; 0: one request")
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds between one poller's polls")
    parser.add_argument("--watch", choices=["poll", "stream"], default="poll",
                        help="poll: the pollers GET the status with If-None-Match (API clients); stream: they hold "
                             "its event stream, as the job page does (a refused stream polls instead)")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--web-threads", type=int, default=48, help="threads per web worker (make run's WEB_THREADS)")
    # Measured: a threads pool with 2 tasks in flight ran at 0.79 of the engine, solo 0.90.
    parser.add_argument("--worker-pool", default="solo", choices=["solo", "threads", "prefork"],
                        help="the inference worker's Celery pool (make run uses solo)")
    parser.add_argument("--worker-concurrency", type=int, default=1, help="tasks in flight in the worker")
    parser.add_argument("--postgres-url", default=DEFAULT_PG, help="server where a temporary database is made")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="keys go under a unique prefix")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    parser.add_argument("--json", action="store_true", help="accepted for symmetry; output is always JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    # Run as a script (python bench/service.py), the repository root is not on sys.path.
    sys.path.insert(0, str(REPO))
    sys.exit(main())
