"""Job status pushed as server-sent events: one read per web process per tick, however many watch.

A status page or client that polls costs the machine a whole request each time (gunicorn, Flask,
the token check, a query: about 5 ms of CPU), so 50 watchers polling once a second take about a
tenth of a 2-core worker machine. A watcher that holds an event stream instead costs one request
to open it; after that each web process reads the status of every job its streams watch in one
query every TICK_S while any stream is open (plus the running training run's, for jobs waiting
for a first model) (and none at all when none is), and a stream sends an
event only when its job's status changed. The stream ends after the job's final status, after
STREAM_MAX_S (the browser's EventSource reconnects by itself), or when the process stops.

Each open stream holds one of the web server's threads, so a process holds at most
JOB_EVENTS_MAX_STREAMS of them; past that the endpoint answers 503 and clients poll instead.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job
from web.conditional import json_etag
from web.serialize import job_json
from web.waiting import waiting_detail

logger = logging.getLogger(__name__)
TICK_S = 0.5  # how stale a streamed status can be; polls every second were as stale on average
KEEPALIVE_S = 15.0  # a comment line now and then keeps proxies from closing an idle stream
STREAM_MAX_S = 300.0  # then the client reconnects: a forgotten tab does not hold a thread for ever
RETRY_MS = 2000  # what EventSource waits before reconnecting


def job_status_body(session: Session, row: Any, told: dict[str, str] | None = None) -> dict[str, Any]:
    """GET /api/v1/jobs/<id>'s body for a job row (its detail told as the run under way, when waiting).

    `told` (detail -> as told) lets many rows read in one go share one training-run query."""
    body = job_json(row)
    told = {} if told is None else told
    if body["detail"] not in told:
        told[body["detail"]] = waiting_detail(session, body["detail"])
    body["detail"] = told[body["detail"]]
    return body


_WATCHES: "weakref.WeakSet[JobWatch]" = weakref.WeakSet()


def stop_streams() -> None:
    """End every open stream of this process now (it is shutting down): otherwise each would hold
    the server's graceful shutdown until its timeout."""
    for watch in list(_WATCHES):
        watch.stop()


def clamp_streams(most: int) -> None:
    """Hold at most `most` streams in this process (the web server's threads less a few it keeps for
    ordinary requests), whatever JOB_EVENTS_MAX_STREAMS says."""
    for watch in list(_WATCHES):
        watch.max_streams = max(0, min(watch.max_streams, most))


class TooManyStreams(Exception):
    """This web process already holds its most streams."""


@dataclass
class _Watched:
    streams: int = 0
    tag: str | None = None
    body: dict[str, Any] | None = None
    gone: bool = False  # the job was deleted while watched


@dataclass(eq=False)  # compared and hashed by identity (kept in a WeakSet)
class JobWatch:
    """One per web process: the latest status of every job a stream watches, read in one query a tick."""

    session_factory: sessionmaker[Session]
    max_streams: int
    tick_s: float = TICK_S
    _jobs: dict[int, _Watched] = field(default_factory=dict)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        _WATCHES.add(self)

    def stop(self) -> None:
        """End this watch's streams and its reading thread."""
        self.stopping.set()
        with self._changed:
            self._changed.notify_all()

    def open(self, job_id: int, tag: str, body: dict[str, Any]) -> None:
        """Start watching `job_id` (whose status the caller just read); raise TooManyStreams at the cap."""
        with self._changed:
            if self.streams() >= self.max_streams:
                raise TooManyStreams()
            watched = self._jobs.setdefault(job_id, _Watched())
            # The caller's read is at least as new as the last tick's: keep it, so neither this
            # stream nor the others watching the job are ever sent an older status after it.
            if watched.tag != tag:
                watched.tag, watched.body, watched.gone = tag, body, False
            watched.streams += 1
            self._ensure_thread()
            self._changed.notify_all()  # the reader, if idle, and the job's other streams

    def close(self, job_id: int) -> None:
        """A stream of `job_id` ended."""
        with self._changed:
            watched = self._jobs.get(job_id)
            if watched is not None:
                watched.streams -= 1
                if watched.streams <= 0:
                    del self._jobs[job_id]

    def streams(self) -> int:
        """Streams open in this process."""
        with self._changed:  # re-entrant: open() asks while holding it
            return sum(w.streams for w in self._jobs.values())

    def wait(self, job_id: int, known_tag: str | None, timeout: float) -> tuple[str | None, dict | None, bool]:
        """Block until `job_id`'s status differs from `known_tag`, the job is gone, the process stops
        or `timeout` passes; return (tag, body, gone) as they are then."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                watched = self._jobs.get(job_id)
                if watched is None or watched.gone or watched.tag != known_tag or self.stopping.is_set():
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            if watched is None:
                return None, None, True
            return watched.tag, watched.body, watched.gone

    def _ensure_thread(self) -> None:
        # A forked web worker inherits the object but not the thread (not alive there): one per process.
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="job-events", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        failing = False
        while not self.stopping.is_set():
            with self._changed:
                while not self._jobs and not self.stopping.is_set():
                    self._changed.wait()  # nothing watched: no queries at all
                ids = sorted(self._jobs)
            try:
                self._publish(ids, self._read(ids))
                if failing:
                    logger.info("job events: reading job status works again")
                failing = False
            except Exception as exc:  # the database is away: keep the last status, try again next tick
                if not failing:  # once per outage, not every tick
                    logger.warning("job events: could not read the status of jobs %s (%s: %s); retrying",
                                   ids, type(exc).__name__, exc)
                failing = True
            self.stopping.wait(self.tick_s)

    def _read(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        with self.session_factory() as session:
            rows = session.execute(select(*Job.__table__.columns).where(Job.id.in_(ids))).all()
            # Jobs waiting for a model all tell the same training run: read it once a tick, not once a job.
            told: dict[str, str] = {}
            return {row.id: job_status_body(session, row, told) for row in rows}

    def _publish(self, ids: list[int], fresh: dict[int, dict[str, Any]]) -> None:
        with self._changed:
            changed = False
            for job_id in ids:
                watched = self._jobs.get(job_id)
                if watched is None:
                    continue
                body = fresh.get(job_id)
                if body is None:
                    changed |= not watched.gone
                    watched.gone = True
                    continue
                tag = json_etag(body)
                if tag != watched.tag:
                    watched.tag, watched.body, changed = tag, body, True
            if changed:
                self._changed.notify_all()


def event(name: str, data: dict[str, Any], event_id: str | None = None) -> str:
    """One server-sent event."""
    head = f"event: {name}\n" + (f"id: {event_id}\n" if event_id else "")
    return head + f"data: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


def status_stream(watch: JobWatch, job_id: int, tag: str, body: dict[str, Any],
                  clock: Callable[[], float] = time.monotonic) -> Iterator[str]:
    """The events of one stream: the status now, then each changed status until the job is done."""
    yield f"retry: {RETRY_MS}\n"
    yield event("status", body, tag)
    if body.get("status") == "done":
        return
    ends = clock() + STREAM_MAX_S
    while not watch.stopping.is_set():
        left = ends - clock()
        if left <= 0:
            return
        new_tag, new_body, gone = watch.wait(job_id, tag, min(KEEPALIVE_S, left))
        if gone:
            yield event("gone", {"id": job_id, "detail": f"job {job_id} does not exist any more"})
            return
        if new_tag != tag and new_body is not None:
            tag = new_tag
            yield event("status", new_body, tag)
            if new_body.get("status") == "done":
                return
        else:
            yield ": still watching\n\n"


class EventStream:
    """A response body that counts its stream out of the watch exactly once when the server closes
    it (PEP 3333 calls close() however the response ends, even one never iterated)."""

    def __init__(self, watch: JobWatch, job_id: int, tag: str, body: dict[str, Any]) -> None:
        """Count the stream in (TooManyStreams at the cap) and prepare its events."""
        watch.open(job_id, tag, body)
        self._watch, self._job_id, self._closed = watch, job_id, False
        self._events = status_stream(watch, job_id, tag, body)

    def __iter__(self) -> Iterator[str]:
        return self._events

    def close(self) -> None:
        """Stop the events and count the stream out."""
        if not self._closed:
            self._closed = True
            self._events.close()
            self._watch.close(self._job_id)
