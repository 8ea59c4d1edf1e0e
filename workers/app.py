"""The one Celery app: broker, queues, routes, reliability settings and the beat schedule."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from celery import Celery
from celery.schedules import crontab
from kombu import Queue

from config.settings import Settings, SettingsError
from tasks.broker import QUEUES

logger = logging.getLogger(__name__)

APP_NAME = "mri"
TASK_MODULES = ("tasks.classify", "tasks.explain", "tasks.train", "tasks.maintenance")
ROUTES = {
    "tasks.classify_batch": {"queue": "inference"},
    "tasks.explain_scan": {"queue": "inference"},
    "tasks.train_model": {"queue": "training"},
    "tasks.scheduled_retrain": {"queue": "training"},
    "tasks.sweep": {"queue": "default"},
}


def parse_crontab(spec: str) -> crontab:
    """Turn a five-field crontab string ("m h dom mon dow") into a Celery schedule."""
    fields = spec.split()
    if len(fields) != 5:
        raise SettingsError(
            f"RETRAIN_SCHEDULE must have five crontab fields (minute hour day month weekday), "
            f"got {spec!r}; set it empty to disable scheduled retraining")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    try:
        return crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                       month_of_year=month_of_year, day_of_week=day_of_week)
    except ValueError as exc:
        raise SettingsError(f"RETRAIN_SCHEDULE {spec!r} is not a valid crontab: {exc}") from None


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The periodic tasks: the sweeper, and retraining on 'training' unless RETRAIN_SCHEDULE is empty."""
    from tasks.leases import sweep_interval_s

    every = sweep_interval_s(settings.scan_lease_s)
    schedule: dict[str, dict[str, Any]] = {
        # Re-sends scans whose worker died, scans that never reached the broker or were
        # lost from it, and stranded training runs (tasks/sweeper.py).
        "sweep": {
            "task": "tasks.sweep",
            "schedule": every,
            "options": {"queue": "default", "expires": every},
        },
    }
    spec = settings.retrain_schedule.strip()
    if spec:
        schedule["scheduled-retrain"] = {
            "task": "tasks.scheduled_retrain",
            "schedule": parse_crontab(spec),
            "options": {"queue": "training"},
        }
    return schedule


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """Transport options: Redis visibility timeout, or folders under DATA_DIR for filesystem://."""
    url = settings.celery_broker_url
    if url.startswith("filesystem://"):
        base = settings.data_dir / "broker"
        folders = {"data_folder_in": base / "queue", "data_folder_out": base / "queue",
                   "processed_folder": base / "processed",
                   # Without this kombu keeps its exchange table in ./control of the cwd.
                   "control_folder": base / "control"}
        for folder in folders.values():
            Path(folder).mkdir(parents=True, exist_ok=True)
        return {**{k: str(v) for k, v in folders.items()}, "store_processed": False}
    # A message that is not acknowledged within this time is delivered again, so it
    # must be longer than the longest task (a training run).
    options: dict[str, Any] = {"visibility_timeout": settings.task_visibility_timeout_s}
    if settings.broker_key_prefix:
        options["global_keyprefix"] = settings.broker_key_prefix
    return options


def create_celery(settings: Settings) -> Celery:
    """Build the Celery app for `settings` (used by workers, beat and the web for sending)."""
    broker = settings.celery_broker_url
    app = Celery(APP_NAME, broker=broker, include=list(TASK_MODULES), set_as_current=False)
    app.conf.update(
        # No result backend: nothing reads task results (state lives in the database), and with
        # one every send subscribed to the task's result channel, which took 19 s to fail while
        # Redis was down (the web's answer waited that long).
        result_backend=None,
        task_ignore_result=True,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="default",
        task_routes=ROUTES,
        # A task is acknowledged only when it finished, and given back if its process dies,
        # so a crash never loses scans (the scan attempt counter stops endless retries).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=broker_transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        beat_schedule=beat_schedule(settings),
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        # Task events (and sent events) let Flower and `celery -A workers events` show each
        # task, its arguments (scan and job ids only) and its state, not only the workers.
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    # Lets tasks and dispatch code find the settings this app was built from.
    app.conf.mri_settings = settings
    return app
