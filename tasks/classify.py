"""tasks.classify_batch: decode scans, run the five-model engine batch by batch, store the results."""
from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import numpy as np
from celery import Task, shared_task
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from config.storage import blob_path
from db.base import utcnow
from db.models import ModelVersion, Scan
from tasks import runtime
from tasks.dispatch import send_scans
from tasks.jobs import mark_started, refresh_job
from tasks.leases import LeaseKeeper, lease_expiry, release_scan_leases, renew_scan_leases
from tasks.store import insert_predictions, prediction_rows
from tasks.versions import active_version

logger = logging.getLogger(__name__)

EngineLoader = Callable[[int, str, Settings], Any]
_DECODE_THREADS = 4
# A failed batch is tried again after 5 s, 10 s, 20 s ... (at most 5 min apart). The scans'
# attempt counter ends the retries; the cap only matters while the database is unreachable.
RETRY_FIRST_S = 5
RETRY_MAX_S = 300
RETRY_LIMIT_WITHOUT_DB = 20


class ModelLoadError(RuntimeError):
    """The batch's model version cannot be loaded (missing or tampered bundle, unknown version)."""


@dataclass
class BatchOutcome:
    """What one batch did: scan ids classified and failed (with reasons)."""

    classified: list[int]
    failed: dict[int, str]
    skipped: list[int]


def _decode(settings: Settings, sha256: str, filename: str, image_size: int | None
            ) -> list[np.ndarray]:
    """All frames of one stored file, decoded for the model input size (raises DecodeError)."""
    from training.decode import DecodeError, decode_bytes

    try:
        data = blob_path(settings.uploads_dir, sha256).read_bytes()
    except FileNotFoundError:
        raise DecodeError("the stored file is missing from the data directory") from None
    except ValueError as exc:  # a corrupt row must fail its scan, not the whole batch
        raise DecodeError(f"the scan's stored file reference is invalid: {exc}") from None
    return [d.image for d in decode_bytes(data, filename, target_size=image_size,
                                          max_pixels=settings.max_image_pixels)]


@dataclass
class Claim:
    """The scans a task took: work to do, scans failed at claim, skipped, and sent off one by one."""

    work: list[tuple[int, str, int, str]]
    failed: dict[int, str]
    skipped: list[int]
    isolated: list[int]


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


def _claim(session_factory: sessionmaker[Session], settings: Settings, scan_ids: Sequence[int],
           owner: str) -> Claim:
    """Lease the queued scans nobody else holds and count an attempt on each, committed before any
    heavy work (so a crash counts). Scans a previous delivery of this same task held when it died
    are not worked on here: each goes back to the queue alone, so a scan that kills its worker
    cannot take the rest of its batch down with it."""
    limit, now = settings.max_scan_attempts, utcnow()
    with session_factory() as session:
        # FOR NO KEY UPDATE (key_share): what an UPDATE of non-key columns takes; unlike FOR
        # UPDATE it does not wait for transactions inserting predictions that reference the scan.
        scans = list(session.execute(select(Scan).where(Scan.id.in_(list(scan_ids))).order_by(Scan.id)
                                     .with_for_update(key_share=True)).scalars())
        claim = Claim([], {}, [], [])
        for scan in scans:
            until = _aware(scan.lease_until)
            held_by_other = until is not None and until >= now and scan.lease_owner != owner
            if scan.status != "queued" or held_by_other:
                claim.skipped.append(scan.id)
            elif scan.lease_owner == owner and until is not None and len(scans) > 1:
                scan.lease_owner, scan.lease_until, scan.dispatched_at = None, None, now
                claim.isolated.append(scan.id)
            elif scan.attempts + 1 > limit:
                scan.attempts += 1
                scan.status = "failed"
                scan.error = claim.failed[scan.id] = gave_up_reason(limit)
                scan.lease_owner = scan.lease_until = None
            else:
                scan.attempts += 1
                scan.lease_owner, scan.lease_until = owner, lease_expiry(settings.scan_lease_s, now)
                claim.work.append((scan.id, scan.sha256, scan.frame, scan.path))
        jobs = {s.job_id for s in scans if s.id not in claim.skipped}
        mark_started(session, jobs)
        for job_id in sorted(jobs):
            refresh_job(session, job_id)
        session.commit()
    if claim.isolated:
        logger.warning("%d scan(s) were held by an earlier delivery of task %s that died; "
                       "each goes back to the queue alone", len(claim.isolated), owner)
    return claim


def gave_up_reason(limit: int) -> str:
    """The reason stored on a scan whose worker died on it `limit` times."""
    return (f"gave up after {limit} attempt(s): the worker stopped while classifying this scan each "
            "time (it may crash the decoder or exhaust the worker's memory)")


def classify_scans(session_factory: sessionmaker[Session], settings: Settings, scan_ids: Sequence[int],
                   model_version_id: int, engine_loader: EngineLoader = runtime.engine_for,
                   owner: str | None = None) -> BatchOutcome:
    """Classify queued scans with the active model version, checked before each engine batch (the
    task's `model_version_id` when none is active); failures get a plain reason, the rest go on.

    `owner` names the lease (the Celery task id; a redelivery of the same task shares it).
    The scans run in engine batches of INFERENCE_BATCH_SIZE, pipelined: while one batch
    computes, the next ones decode in threads and the previous one is written to the
    database, so the engine rarely waits. Each batch's results are committed as it ends,
    and a LeaseKeeper renews the lease on the rest until the task ends.
    """
    owner = owner or f"local-{uuid.uuid4().hex}"
    claim = _claim(session_factory, settings, scan_ids, owner)
    if claim.isolated:
        send_scans(settings, claim.isolated, model_version_id, per_task=1)
    if not claim.work:
        return BatchOutcome([], claim.failed, claim.skipped)
    ids = [scan_id for scan_id, _, _, _ in claim.work]
    keeper = LeaseKeeper(session_factory, settings.scan_lease_s,
                         lambda session: renew_scan_leases(session, owner, ids, settings.scan_lease_s),
                         f"{len(ids)} scan(s) of task {owner}")
    try:
        with keeper:
            classified, failed = _run_batches(session_factory, settings, claim.work, model_version_id,
                                              engine_loader)
    except BaseException:
        _release_quietly(session_factory, owner, ids)
        raise
    failed.update(claim.failed)
    return BatchOutcome(classified, failed, claim.skipped)


def _release_quietly(session_factory: sessionmaker[Session], owner: str, scan_ids: Sequence[int]) -> None:
    """After a failure, free the leases so a retry or the sweeper can take the scans at once."""
    try:
        with session_factory() as session:
            release_scan_leases(session, owner, scan_ids)
            session.commit()
    except Exception as exc:  # the database may be what failed; the leases then run out
        logger.warning("could not release the leases of task %s: %s: %s", owner, type(exc).__name__, exc)


def _batch_version(session_factory: sessionmaker[Session], fallback_id: int) -> tuple[int, str, int | None]:
    """(id, bundle folder, image size) of the version the next batch runs with: the active one, so
    an activation or a rollback takes over at the next batch; the task's own when none is active."""
    with session_factory() as session:
        version = active_version(session) or session.get(ModelVersion, fallback_id)
        if version is None:
            raise ModelLoadError(f"model version {fallback_id} does not exist")
        return version.id, version.bundle_path, int((version.manifest or {}).get("image_size") or 0) or None


def _load_engine(engine_loader: EngineLoader, version_id: int, bundle_path: str, settings: Settings) -> Any:
    try:
        return engine_loader(version_id, bundle_path, settings)
    except Exception as exc:
        raise ModelLoadError(f"model version {version_id} could not be loaded: "
                             f"{type(exc).__name__}: {exc}") from exc


def _run_batches(session_factory: sessionmaker[Session], settings: Settings,
                 work: list[tuple[int, str, int, str]], model_version_id: int,
                 engine_loader: EngineLoader) -> tuple[list[int], dict[int, str]]:
    """Decode, classify and store `work` batch by batch; return (classified ids, failed reasons).

    Each batch runs with the version active when it starts (`model_version_id`, the one the
    task was sent with, when none is): a batch never mixes versions, and each batch's
    predictions record the version that made them.
    """
    failed: dict[int, str] = {}
    version_id, bundle_path, image_size = _batch_version(session_factory, model_version_id)
    size = settings.inference_batch_size
    groups = [work[i:i + size] for i in range(0, len(work), size)]
    last_use = {sha: k for k, group in enumerate(groups) for _, sha, _, _ in group}
    release: dict[int, list[str]] = {}  # batch -> files no later batch needs
    for sha, k in last_use.items():
        release.setdefault(k, []).append(sha)
    files: dict[str, Future] = {}
    classified: list[int] = []
    with ThreadPoolExecutor(max_workers=_DECODE_THREADS) as pool, ThreadPoolExecutor(max_workers=1) as writer:

        def decode_group(k: int) -> None:
            for _, sha, _, path in groups[k] if k < len(groups) else ():
                if sha not in files:
                    files[sha] = pool.submit(_decode, settings, sha, path, image_size)

        # Decoding of the first batches runs in threads (OpenCV releases the GIL) while
        # the engine loads.
        decode_group(0)
        decode_group(1)
        engine = _load_engine(engine_loader, version_id, bundle_path, settings)
        storing: Future | None = None
        for k, group in enumerate(groups):
            if k > 0:
                latest = _batch_version(session_factory, model_version_id)
                if latest[0] != version_id:
                    logger.info("model version %s is active now: batches %d-%d of this task use it instead of %s",
                                latest[0], k + 1, len(groups), version_id)
                    if latest[2] != image_size:  # decoded ahead for the other version's input size
                        files.clear()
                    version_id, bundle_path, image_size = latest
                    decode_group(k)
                    decode_group(k + 1)
                    engine = _load_engine(engine_loader, version_id, bundle_path, settings)
            started = time.perf_counter()
            decode_group(k + 2)
            images, ready, group_failed = _collect(group, files)
            for sha in release.get(k, ()):
                files.pop(sha, None)
            results = engine.classify(images) if images else []
            latency_ms = (time.perf_counter() - started) * 1000.0 / max(len(group), 1)
            if storing is not None:
                storing.result()  # one write in flight; its error fails the task (retried)
            storing = writer.submit(_store, session_factory, version_id, ready, results,
                                    group_failed, latency_ms)
            classified.extend(ready)
            failed.update(group_failed)
            logger.info("batch of %d: %d classified, %d failed in %.0f ms/scan", len(group), len(ready),
                        len(group_failed), latency_ms)
        storing.result()
    return classified, failed


def _collect(group: Sequence[tuple[int, str, int, str]], files: dict[str, Future]
             ) -> tuple[list[np.ndarray], list[int], dict[int, str]]:
    """The decoded frame of each scan in `group`, or the reason it cannot be classified."""
    from training.decode import DecodeError

    images, ready, failed = [], [], {}
    for scan_id, sha, frame, _ in group:
        try:
            frames = files[sha].result()
        except DecodeError as exc:
            failed[scan_id] = str(exc)
            continue
        if frame >= len(frames):
            failed[scan_id] = f"frame {frame} not found: the file has {len(frames)} frame(s)"
            continue
        images.append(frames[frame])
        ready.append(scan_id)
    return images, ready, failed


def _store(session_factory: sessionmaker[Session], model_version_id: int, ready: list[int],
           results: list[dict], failed: dict[int, str], latency_ms: float) -> None:
    rows = []
    for scan_id, result in zip(ready, results):
        rows.extend(prediction_rows(scan_id, model_version_id, result, round(latency_ms, 2)))
    with session_factory() as session:
        scans = {s.id: s for s in session.execute(
            select(Scan).where(Scan.id.in_([*ready, *failed])).with_for_update(key_share=True)
        ).scalars()}
        insert_predictions(session, rows)
        now = utcnow()
        for scan_id in ready:
            scan = scans[scan_id]
            # A duplicate delivery may have finished it first; the first result stays.
            if scan.status == "queued":
                scan.status, scan.error, scan.classified_at = "classified", "", now
                scan.model_version_id = model_version_id
                scan.lease_owner = scan.lease_until = None
        for scan_id, reason in failed.items():
            scan = scans[scan_id]
            if scan.status == "queued":
                scan.status, scan.error = "failed", reason
                scan.lease_owner = scan.lease_until = None
        for job_id in sorted({s.job_id for s in scans.values()}):
            refresh_job(session, job_id)
        session.commit()


def failure_reason(exc: BaseException, attempts: int) -> str:
    """The plain reason stored on scans whose batch failed every attempt."""
    if isinstance(exc, ModelLoadError):
        return str(exc)
    return f"classification failed {attempts} time(s): {type(exc).__name__}: {exc}"


def give_up_if_exhausted(session_factory: sessionmaker[Session], settings: Settings,
                         scan_ids: Sequence[int], exc: BaseException) -> int | None:
    """After a batch raised: once its queued scans used their attempts, fail them with a reason.

    Returns None while a scan has attempts left (the caller retries the batch); otherwise
    how many scans it failed, with their jobs' counters and status refreshed.
    """
    limit = settings.max_scan_attempts
    with session_factory() as session:
        scans = list(session.execute(
            select(Scan).where(Scan.id.in_(list(scan_ids)), Scan.status == "queued").order_by(Scan.id)
            .with_for_update(key_share=True)).scalars())
        if any(scan.attempts < limit for scan in scans):
            return None
        reason = failure_reason(exc, limit)
        for scan in scans:
            scan.status, scan.error = "failed", reason
            scan.lease_owner = scan.lease_until = None
        for job_id in sorted({scan.job_id for scan in scans}):
            refresh_job(session, job_id)
        session.commit()
    if scans:
        logger.warning("gave up on %d scan(s) after %d attempt(s): %s", len(scans), limit, reason)
    return len(scans)


@shared_task(name="tasks.classify_batch", bind=True)
def classify_batch(self: Task, scan_ids: list[int], model_version_id: int,
                   jobs: list[int] | None = None) -> dict[str, int]:
    """Celery task: classify these scans with this model version (ids in, rows re-read).

    `jobs` (the scans' job ids) only labels the task in Flower and `celery events`.
    """
    factory, conf = runtime.session_factory(), runtime.settings()
    try:
        outcome = classify_scans(factory, conf, scan_ids, model_version_id, owner=self.request.id)
    except Exception as exc:
        # acks_late acknowledges a failed task, so without a retry or a verdict here the
        # scans would stay queued and their job 'running' for ever.
        logger.warning("batch of %d scan(s) of job(s) %s with model version %s failed: %s: %s",
                       len(scan_ids), jobs, model_version_id, type(exc).__name__, exc)
        try:
            failed = give_up_if_exhausted(factory, conf, scan_ids, exc)
            if failed is not None:
                return {"classified": 0, "failed": failed, "skipped": len(scan_ids) - failed}
        except Exception:
            logger.exception("could not record the batch's failure; it is retried")
        countdown = min(RETRY_FIRST_S * 2 ** self.request.retries, RETRY_MAX_S)
        raise self.retry(exc=exc, countdown=countdown, max_retries=RETRY_LIMIT_WITHOUT_DB)
    return {"classified": len(outcome.classified), "failed": len(outcome.failed),
            "skipped": len(outcome.skipped)}
