"""Maintenance tasks on the 'default' queue."""
from __future__ import annotations

from celery import shared_task

from tasks import runtime
from tasks.dispatch import dispatch_waiting_jobs


@shared_task(name="tasks.dispatch_waiting_jobs")
def dispatch_waiting() -> int:
    """Celery task (beat, every minute): send jobs waiting for a model version or for the broker."""
    return dispatch_waiting_jobs(runtime.session_factory(), runtime.settings())
