"""GET /api/v1/jobs/<id>/events: the status pushed as it changes, one query a tick however many watch."""
from __future__ import annotations

import json
import threading
import time

import pytest
from sqlalchemy import event

from db.models import Job


@pytest.fixture()
def client(app):
    """A test client that says, as gunicorn's gthread worker and werkzeug's threaded server do, that
    the server runs requests on threads (a stream is refused by servers that do not)."""
    from flask.testing import FlaskClient

    class ThreadedServerClient(FlaskClient):
        def open(self, *args, **kwargs):
            kwargs["environ_overrides"] = {"wsgi.multithread": True, **(kwargs.get("environ_overrides") or {})}
            return super().open(*args, **kwargs)

    return ThreadedServerClient(app, app.response_class, use_cookies=True)


def _job(session, **fields) -> int:
    job = Job(name="watched", sealed=True, status="running", total=4, **fields)
    session.add(job)
    session.commit()
    return job.id


def _events(chunks) -> list[tuple[str, dict]]:
    """(event name, data) of the events in these chunks; comments and retry lines are skipped."""
    found = []
    for block in "".join(chunks).split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in lines:
            found.append((lines["event"], json.loads(lines["data"])))
    return found


def _next_event(stream, timeout: float = 10.0) -> tuple[str, dict]:
    """Read the stream until one whole event arrives."""
    chunks: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chunk = next(stream)
        chunks.append(chunk.decode() if isinstance(chunk, bytes) else chunk)
        found = _events(chunks)
        if found:
            return found[0]
    raise AssertionError("no event")


def _watching(client, auth, job_id: int):
    """Open a job's stream; return (response, its chunks) after reading the first status from it."""
    response = client.get(f"/api/v1/jobs/{job_id}/events", headers=auth("viewer"), buffered=False)
    stream = iter(response.response)
    assert _next_event(stream)[0] == "status"
    return response, stream


def _update(session, job_id: int, **fields) -> None:
    job = session.get(Job, job_id)
    for name, value in fields.items():
        setattr(job, name, value)
    session.commit()


def test_a_stream_sends_each_change_and_ends_with_the_done_status(app, client, auth, session):
    job_id = _job(session, done=1)
    response = client.get(f"/api/v1/jobs/{job_id}/events", headers=auth("viewer"), buffered=False)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    stream = iter(response.response)
    name, first = _next_event(stream)
    assert (name, first["done"], first["status"]) == ("status", 1, "running")
    # The same body as a poll would get.
    assert first == client.get(f"/api/v1/jobs/{job_id}", headers=auth("viewer")).get_json()

    started = time.monotonic()
    _update(session, job_id, done=3)
    name, second = _next_event(stream)
    assert (name, second["done"]) == ("status", 3)
    assert time.monotonic() - started < 3.0  # within a few ticks of 0.5 s, not a poll interval away

    _update(session, job_id, done=4, status="done")
    name, last = _next_event(stream)
    assert (name, last["status"]) == ("status", "done")
    with pytest.raises(StopIteration):  # nothing after the final status
        next(stream)
    response.close()
    assert app.extensions["mri"].job_watch.streams() == 0


def test_watchers_share_one_query_a_tick(app, client, auth, session):
    """Ten streams of one job cost the process one status query per tick, as one stream does."""
    job_id = _job(session)
    engine = app.extensions["mri"].engine
    queries: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        if "FROM jobs" in statement and threading.current_thread().name == "job-events":
            queries.append(statement)

    responses = [client.get(f"/api/v1/jobs/{job_id}/events", headers=auth("viewer"), buffered=False)
                 for _ in range(10)]
    assert all(r.status_code == 200 for r in responses)
    assert app.extensions["mri"].job_watch.streams() == 10
    event.listen(engine, "before_cursor_execute", count)
    try:
        time.sleep(2.0)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert 1 <= len(queries) <= 6, queries  # about 4 ticks of 0.5 s (fewer on a loaded machine): one query each, not ten
    for response in responses:
        response.close()
    assert app.extensions["mri"].job_watch.streams() == 0
    # Nobody watching: no queries at all.
    queries.clear()
    event.listen(engine, "before_cursor_execute", count)
    try:
        time.sleep(1.2)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert queries == []


def test_past_the_cap_the_answer_is_503_and_a_closed_stream_frees_its_place(app, client, auth, session):
    job_id = _job(session)
    app.extensions["mri"].job_watch.max_streams = 1
    first = client.get(f"/api/v1/jobs/{job_id}/events", headers=auth("viewer"), buffered=False)
    assert first.status_code == 200
    refused = client.get(f"/api/v1/jobs/{job_id}/events", headers=auth("viewer"))
    assert refused.status_code == 503 and refused.get_json()["error"] == "too_many_streams"
    assert refused.headers["Retry-After"] == "30"
    first.close()  # the client went away before reading anything: its place is free again
    again = client.get(f"/api/v1/jobs/{job_id}/events", headers=auth("viewer"), buffered=False)
    assert again.status_code == 200
    again.close()


def test_a_job_deleted_while_watched_ends_its_stream(app, client, auth, session):
    job_id = _job(session)
    response, stream = _watching(client, auth, job_id)
    session.delete(session.get(Job, job_id))
    session.commit()
    name, data = _next_event(stream)
    assert (name, data["id"]) == ("gone", job_id)
    response.close()


def test_a_stream_needs_a_login_and_an_existing_job(client, auth):
    assert client.get("/api/v1/jobs/1/events").status_code == 401
    assert client.get("/api/v1/jobs/424242/events", headers=auth("viewer")).status_code == 404


def test_a_server_without_threads_is_told_to_poll(app, auth, session):
    """gunicorn's sync worker answers one request at a time: a stream there would block the process."""
    job_id = _job(session)
    refused = app.test_client().get(f"/api/v1/jobs/{job_id}/events", headers=auth("viewer"),
                                    environ_overrides={"wsgi.multithread": False})
    assert refused.status_code == 503 and refused.get_json()["error"] == "streams_unavailable"
    assert app.extensions["mri"].job_watch.streams() == 0


def _idle_watch(max_streams: int = 5):
    """A JobWatch whose reader never gets to read (a tick an hour long): the tests drive it by hand."""
    from web.job_events import JobWatch

    def no_database():
        raise RuntimeError("no database in this test")

    return JobWatch(no_database, max_streams=max_streams, tick_s=3600)


def test_a_second_watcher_never_makes_anyone_see_an_older_status():
    """A stream opened with a fresher read than the last tick's replaces it: the first stream moves
    forward to it, and the new one is not sent the older status after its own."""
    watch = _idle_watch()
    watch.open(7, "tag-1", {"done": 1})
    watch.open(7, "tag-2", {"done": 2})  # a second page read the job a moment later
    tag, body, gone = watch.wait(7, "tag-1", timeout=1.0)
    assert (tag, body, gone) == ("tag-2", {"done": 2}, False)
    started = time.monotonic()
    assert watch.wait(7, "tag-2", timeout=0.3)[0] == "tag-2"  # nothing newer: it waits, then says the same
    assert time.monotonic() - started >= 0.25
    watch.stop()


def test_stop_streams_ends_every_open_stream_at_once(app, client, auth, session):
    from web.job_events import stop_streams

    response, stream = _watching(client, auth, _job(session))
    started = time.monotonic()
    stop_streams()
    assert [chunk for chunk in stream if b"event:" in (chunk if isinstance(chunk, bytes) else chunk.encode())] == []
    assert time.monotonic() - started < 2.0  # not the 15 s of a keep-alive wait
    response.close()


def test_clamp_streams_keeps_threads_for_ordinary_requests():
    from web.job_events import clamp_streams

    watch = _idle_watch(max_streams=40)
    clamp_streams(8)
    assert watch.max_streams == 8
    clamp_streams(-3)
    assert watch.max_streams == 0
    watch.stop()


def test_jobs_waiting_for_a_model_read_the_training_run_once_a_tick(app, session):
    """Three watched jobs waiting for the first model cost one jobs query and one training-run
    query a tick, not one more per waiting job; each still tells the run under way."""
    from db.models import TrainingRun
    from tasks.dispatch import WAITING_FOR_MODEL

    session.add(TrainingRun(status="running", progress=0.41, params={}))
    session.commit()
    ids = [_job(session, status_detail=WAITING_FOR_MODEL) for _ in range(3)] + [_job(session)]
    engine = app.extensions["mri"].engine
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        bodies = app.extensions["mri"].job_watch._read(ids)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len([s for s in statements if "FROM training_runs" in s]) == 1, statements
    assert len([s for s in statements if "FROM jobs" in s]) == 1, statements
    for job_id in ids[:3]:
        assert "is running (41%)" in bodies[job_id]["detail"]
    assert bodies[ids[3]]["detail"] != bodies[ids[0]]["detail"]
