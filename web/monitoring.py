"""/healthz (open) and /metrics (Prometheus text), both computed at request time from DB and broker.

Metrics are read from the database and Redis on every scrape rather than kept in
process memory, so any number of web processes report the same figures.
"""
from __future__ import annotations

import logging
import time
from datetime import timezone
from typing import Iterator

from flask import Blueprint, Response, jsonify
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select, text
from sqlalchemy.orm import Session

from config.settings import Settings
from db.models import Job, ModelVersion, Prediction, Scan, TrainingRun
from db.base import utcnow
from tasks.broker import QUEUES, queue_depths, queue_workers
from web.state import app_state

logger = logging.getLogger(__name__)
bp = Blueprint("monitoring", __name__)
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WORKERS_CACHE_S = 15.0
# A queued scan older than this is worth a warning in /healthz (a healthy service starts
# a scan within seconds to minutes).
STALLED_AFTER_S = 600.0
_workers_cache: list = []  # [monotonic time, queue -> workers]


def broker_status(settings: Settings) -> str:
    """'ok' when the broker answers, else a short reason."""
    try:
        queue_depths(settings)
    except Exception as exc:  # any failure means "not reachable" for a health probe
        return f"unreachable: {exc.__class__.__name__}: {exc}"[:300]
    return "ok"


def cached_queue_workers(settings: Settings) -> dict[str, list[str]] | None:
    """queue_workers(), asked at most every WORKERS_CACHE_S per process: each ask waits for
    replies, and load balancers poll /healthz often. None when unknown (no broker, or a
    transport that cannot broadcast)."""
    now = time.monotonic()
    if _workers_cache and now - _workers_cache[0] < WORKERS_CACHE_S:
        return _workers_cache[1]
    try:
        workers = queue_workers(settings)
    except Exception as exc:
        logger.warning("health check: cannot ask the workers: %s: %s", type(exc).__name__, exc)
        workers = None
    _workers_cache[:] = [now, workers]
    return workers


def oldest_queued_scan_age_s(session: Session) -> float | None:
    """Seconds the oldest scan still waiting to be classified has waited (None: nothing waits)."""
    oldest = session.scalar(select(func.min(Scan.created)).where(Scan.status == "queued"))
    if oldest is None:
        return None
    if oldest.tzinfo is None:  # SQLite hands back naive UTC datetimes
        oldest = oldest.replace(tzinfo=timezone.utc)
    return round(max(0.0, (utcnow() - oldest).total_seconds()), 1)


def busy_queues(session_factory) -> dict[str, str]:
    """Queues whose worker is evidently alive though it did not answer: it holds a live lease on
    work (a solo-pool worker answers the control channel only between tasks, so one training for
    45 minutes looks absent). Queue -> what it is busy with."""
    now = utcnow()
    busy: dict[str, str] = {}
    try:
        with session_factory() as session:
            run = session.scalar(select(TrainingRun.id).where(TrainingRun.status == "running",
                                                              TrainingRun.lease_until > now).order_by(TrainingRun.id))
            leased = session.scalar(select(func.count()).select_from(Scan).where(Scan.status == "queued",
                                                                                 Scan.lease_until > now))
    except Exception as exc:
        logger.warning("health check: cannot read the leases: %s", exc)
        return busy
    if run is not None:
        busy["training"] = f"busy with training run #{run} (it renews its lease; a busy worker does not answer)"
    if leased:
        busy["inference"] = f"busy classifying {leased} leased scan(s) (a busy worker does not answer)"
    return busy


def _queue_report(settings: Settings, session_factory) -> tuple[dict[str, dict], list[str]]:
    """Per queue: messages waiting and the workers consuming it; plus warnings for a person."""
    try:
        depths: dict[str, int] | None = queue_depths(settings)
    except Exception:
        depths = None
    workers = cached_queue_workers(settings) if depths is not None else None
    silent = [q for q in QUEUES if workers is not None and not workers.get(q)]
    busy = busy_queues(session_factory) if silent else {}
    report, warnings = {}, []
    for queue in QUEUES:
        entry: dict = {"waiting": depths[queue] if depths is not None else None,
                       "workers": workers.get(queue, []) if workers is not None else None}
        if queue in busy:
            entry["busy"] = busy[queue]
        elif queue in silent:
            warnings.append(f"no worker consumes the {queue} queue")
        report[queue] = entry
    return report, warnings


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """Liveness: 200 when the database answers (503 otherwise). Also reports the broker, the
    workers consuming each queue and how long the oldest queued scan has waited, so a person
    can tell a stalled service from a busy one."""
    state = app_state()
    database, oldest = "ok", None
    try:
        with state.session_factory() as session:
            session.execute(text("SELECT 1"))
            oldest = oldest_queued_scan_age_s(session)
    except Exception as exc:
        logger.warning("health check: database unreachable: %s", exc)
        database = f"unreachable: {exc.__class__.__name__}"
    queues, warnings = _queue_report(state.settings, state.session_factory)
    if oldest is not None and oldest > STALLED_AFTER_S:
        warnings.append(f"the oldest queued scan has waited {oldest:.0f} s")
    body = {"status": "ok" if database == "ok" else "error", "database": database,
            "broker": broker_status(state.settings), "queues": queues,
            "oldest_queued_scan_s": oldest, "warnings": warnings}
    return jsonify(body), 200 if database == "ok" else 503


class ServiceCollector(Collector):
    """Reads counts and latencies from the database and queue depths from the broker."""

    def __init__(self, session: Session, settings: Settings) -> None:
        self.session = session
        self.settings = settings

    def collect(self) -> Iterator:
        """Yield every metric family."""
        yield from self._queues()
        session = self.session
        scans = dict(session.execute(select(Scan.status, func.count(Scan.id)).group_by(Scan.status)).all())
        gauge = GaugeMetricFamily("mri_scans", "Scans by status", labels=["status"])
        for status in ("queued", "classified", "failed"):
            gauge.add_metric([status], scans.get(status, 0))
        yield gauge
        yield CounterMetricFamily("mri_scans_classified", "Scans classified", value=scans.get("classified", 0))
        yield CounterMetricFamily("mri_scans_failed", "Scans that failed with a reason",
                                  value=scans.get("failed", 0))
        reused = session.scalar(select(func.count(Scan.id)).where(Scan.reused.is_(True))) or 0
        yield CounterMetricFamily("mri_scans_reused", "Scans answered from stored predictions", value=reused)
        jobs = dict(session.execute(select(Job.status, func.count(Job.id)).group_by(Job.status)).all())
        gauge = GaugeMetricFamily("mri_jobs", "Jobs by status", labels=["status"])
        for status in ("queued", "running", "done"):
            gauge.add_metric([status], jobs.get(status, 0))
        yield gauge
        runs = dict(session.execute(select(TrainingRun.status, func.count(TrainingRun.id))
                                    .group_by(TrainingRun.status)).all())
        gauge = GaugeMetricFamily("mri_training_runs", "Training runs by status", labels=["status"])
        for status in ("queued", "running", "succeeded", "failed"):
            gauge.add_metric([status], runs.get(status, 0))
        yield gauge
        yield GaugeMetricFamily("mri_oldest_queued_scan_age_seconds",
                                "How long the oldest scan still waiting to be classified has waited (0: none)",
                                value=oldest_queued_scan_age_s(session) or 0.0)
        active = session.scalar(select(ModelVersion.id).where(ModelVersion.status == "active")
                                .order_by(ModelVersion.id.desc()).limit(1))
        yield GaugeMetricFamily("mri_active_model_version", "Id of the active model version (0: none)",
                                value=active or 0)
        yield self._latency()

    def _queues(self) -> Iterator:
        up = GaugeMetricFamily("mri_broker_up", "1 when the broker answered this scrape")
        depth = GaugeMetricFamily("mri_queue_depth", "Messages waiting in a broker queue", labels=["queue"])
        try:
            depths = queue_depths(self.settings)
        except Exception as exc:
            logger.warning("metrics: broker unreachable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for queue, count in depths.items():
            depth.add_metric([queue], count)
        yield up
        yield depth
        workers = cached_queue_workers(self.settings)
        if workers is not None:
            consumers = GaugeMetricFamily("mri_queue_workers", "Workers consuming a queue", labels=["queue"])
            for queue in QUEUES:
                consumers.add_metric([queue], len(workers.get(queue, [])))
            yield consumers

    def _latency(self) -> HistogramMetricFamily:
        # One ensemble row per computed scan carries the per-scan share of its batch's time.
        seconds = Prediction.latency_ms / 1000.0
        columns = [func.count(Prediction.id), func.coalesce(func.sum(seconds), 0.0)]
        columns += [func.coalesce(func.sum(case((seconds <= b, 1), else_=0)), 0) for b in LATENCY_BUCKETS_S]
        row = self.session.execute(select(*columns).where(Prediction.model_name == "ensemble",
                                                          Prediction.latency_ms.is_not(None))).one()
        count, total, *cumulative = row
        buckets = [(str(b), int(c)) for b, c in zip(LATENCY_BUCKETS_S, cumulative)] + [("+Inf", int(count))]
        return HistogramMetricFamily("mri_scan_inference_seconds",
                                     "Per-scan inference time (batch time / batch size) of computed scans",
                                     buckets=buckets, sum_value=float(total))


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition."""
    state = app_state()
    registry = CollectorRegistry(auto_describe=False)
    with state.session_factory() as session:
        registry.register(ServiceCollector(session, state.settings))
        payload = generate_latest(registry)
    return Response(payload, mimetype="text/plain; version=0.0.4; charset=utf-8")
