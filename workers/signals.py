"""Worker signal handlers: per-process resources are (re)made in the child, never inherited."""
from __future__ import annotations

import logging

from celery.signals import worker_process_init, worker_process_shutdown

logger = logging.getLogger(__name__)


@worker_process_init.connect
def _fresh_resources_after_fork(**_: object) -> None:
    """Drop DB connections inherited from the parent; the engine loads lazily on first task."""
    from tasks import runtime

    runtime.reset_after_fork()


@worker_process_shutdown.connect
def _release_resources(**_: object) -> None:
    """Close this process's DB pool on the way out."""
    from tasks import runtime

    runtime.shutdown()
