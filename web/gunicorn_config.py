"""gunicorn's settings for the web: `gunicorn -c python:web.gunicorn_config 'web:create_app()'`.

Threads, because each open status stream (GET /api/v1/jobs/<id>/events) holds one; and a hook
that ends those streams as soon as a worker is told to stop, so a restart does not wait out the
graceful timeout for pages that are still watching. Command-line options override these.
"""
from __future__ import annotations

import os
import signal

worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "48"))  # more than JOB_EVENTS_MAX_STREAMS (40)


def post_worker_init(worker) -> None:
    """Chain the worker's stop signals: end the status streams, then what gunicorn does."""
    from web.job_events import stop_streams

    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        previous = signal.getsignal(number)

        def stop(signum, frame, previous=previous) -> None:
            stop_streams()
            if callable(previous):
                previous(signum, frame)

        signal.signal(number, stop)
