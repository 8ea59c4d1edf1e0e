"""Maintenance tasks on the 'default' queue."""
from __future__ import annotations

from dataclasses import asdict

from celery import shared_task

from tasks import runtime
from tasks.sweeper import sweep as sweep_once


@shared_task(name="tasks.sweep")
def sweep() -> dict[str, int]:
    """Celery task (beat, every SCAN_LEASE_S / 2): re-send stranded scans and training runs."""
    return asdict(sweep_once(runtime.session_factory(), runtime.settings()))
