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
# Threads streams may never take, whatever JOB_EVENTS_MAX_STREAMS says: ordinary requests need some.
FREE_THREADS = 8


def post_worker_init(worker) -> None:
    """Keep a thread free of streams, and chain the worker's stop signals: end the status streams
    at once, then do what gunicorn does."""
    from web.job_events import clamp_streams, stop_streams

    clamp_streams(worker.cfg.threads - FREE_THREADS)
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        previous = signal.getsignal(number)

        def stop(signum, frame, previous=previous) -> None:
            stop_streams()
            if callable(previous):
                previous(signum, frame)
            else:  # the default action (or none): restore it and let the signal take its course
                signal.signal(signum, previous)
                os.kill(os.getpid(), signum)

        signal.signal(number, stop)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn sets it: a stop does not break a system call


def worker_exit(server, worker) -> None:
    """A worker leaving without a stop signal (max_requests, its parent gone) ends its streams too."""
    from web.job_events import stop_streams

    stop_streams()
