"""Upload scans as a job, add to an open job, seal it, read its status and per-scan results."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterator

from flask import Response, jsonify, request, url_for
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from db.models import AuditEvent, Job, Review, Scan
from tasks.dispatch import dispatch_job
from tasks.jobs import refresh_job
from tasks.reviews import current_review_ids
from web.api import bp
from web.auth import current_user
from web.blobs import BlobStager
from web.conditional import conditional_json, json_etag
from web.errors import ApiError, json_error
from web.ingest import create_job, add_scans, job_name, plan_scans, stage_uploads
from web.job_events import EventStream, TooManyStreams, job_status_body
from web.job_summary import study_summaries
from web.queries import known_classes
from web.serialize import job_json, review_json, scan_json
from web.state import app_state, db_session, get_or_404, use_celery
from web.validation import accepts_query, no_body, refuse_unknown

logger = logging.getLogger(__name__)
TRUE_VALUES = ("1", "true", "yes", "on")
# A browser form may carry its CSRF token as a field instead of a header.
CSRF_FIELD = "csrf_token"


def _require_multipart() -> None:
    if request.mimetype != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type",
                       "send multipart/form-data with one or more `files` parts (or one .zip)")


def _stage_request(form_fields: tuple[str, ...]) -> tuple[BlobStager, list, list]:
    """Stage the request's files; raise 400 when there are none. The caller must discard the stager."""
    _require_multipart()
    # e.g. `-F file=@x` or `-F path=a/b.png` would otherwise be ignored without a word
    refuse_unknown(request.files.keys(), ("files",), "file part(s)")
    refuse_unknown(request.form.keys(), (*form_fields, CSRF_FIELD), "form field(s)")
    settings = app_state().settings
    files = [f for f in request.files.getlist("files") if f.filename or f.content_length]
    if not files:
        raise ApiError(400, "no_files", "the request carries no `files` parts")
    stager = BlobStager(settings.uploads_dir, settings.data_dir / "tmp")
    try:
        incoming = stage_uploads(files, request.form.getlist("paths"), settings, stager)
        if not incoming:
            raise ApiError(400, "no_files", "no scan files left after skipping system files "
                                            "(.DS_Store, Thumbs.db, __MACOSX/)")
        specs = plan_scans(incoming, settings.max_zip_files, max_pixels=settings.max_image_pixels)
    except BaseException:
        stager.discard()
        raise
    return stager, specs, [job_name(incoming, files), "zip" if _all_zips(files) else "upload"]


def _all_zips(files: list) -> bool:
    return all((f.filename or "").lower().endswith(".zip") for f in files)


@contextmanager
def _storing(session: Session, stager: BlobStager) -> Iterator[None]:
    """Run the block that places staged blobs and writes rows, then commit; on any failure
    roll back and remove the blobs this request newly placed. Staging leftovers always go."""
    try:
        yield
        session.commit()
    except BaseException:
        _undo_placed(session, stager)
        raise
    finally:
        stager.discard()


def _undo_placed(session: Session, stager: BlobStager) -> None:
    """After a failed database write: roll back and remove the blobs this request newly stored."""
    session.rollback()
    digests = list(stager.placed)
    try:
        # A concurrent upload of the same content may have committed rows that use these blobs.
        used = frozenset(session.scalars(select(Scan.sha256).where(Scan.sha256.in_(digests)).distinct())) \
            if digests else frozenset()
    except Exception:  # the database is what failed; removing a blob another job needs is worse
        logger.exception("could not check blob use after a failed upload; keeping %d blob(s)", len(digests))
        stager.placed.clear()
        return
    finally:
        session.rollback()
    stager.unplace(keep=used)
    logger.warning("upload not recorded; removed %d newly stored blob(s)", len(digests) - len(used))


def _dispatch(job_id: int, scan_ids: list[int] | None) -> None:
    state = app_state()
    use_celery()
    dispatch_job(state.session_factory, job_id, state.settings, scan_ids=scan_ids)


def _status_url(job_id: int) -> str:
    return url_for("api.job_status", job_id=job_id)


@bp.post("/jobs")
@accepts_query("open")
def create_job_route() -> tuple[Response, int, dict[str, str]]:
    """Upload files (or a zip) as a new job: 202 {id, status_url}; `open=1` keeps it open for more."""
    keep_open = (request.args.get("open") or request.form.get("open") or "").lower() in TRUE_VALUES
    stager, specs, (name, source) = _stage_request(("paths", "open"))
    session = db_session()
    with _storing(session, stager):
        stager.commit()
        job, scans = create_job(session, current_user(), specs, sealed=not keep_open, source=source, name=name)
        refresh_job(session, job.id)
    logger.info("job %s created with %d scans (%s)", job.id, len(scans), "open" if keep_open else "sealed")
    _dispatch(job.id, [s.id for s in scans])
    url = _status_url(job.id)
    return jsonify(id=job.id, status_url=url, total=len(scans), open=keep_open), 202, {"Location": url}


def _open_job(job_id: int) -> Job:
    session = db_session()
    job = session.execute(select(Job).where(Job.id == job_id).with_for_update()).scalar_one_or_none()
    if job is None:
        raise ApiError(404, "not_found", f"job {job_id} does not exist")
    user = current_user()
    if job.user_id not in (None, user.id) and user.role != "admin":
        raise ApiError(403, "forbidden", "only the uploader of a job (or an admin) may change it")
    if job.sealed:
        raise ApiError(409, "job_closed", f"job {job_id} is closed; start a new job for more files")
    return job


@bp.post("/jobs/<int:job_id>/files")
def add_files_route(job_id: int) -> tuple[Response, int]:
    """Add files to an open job (multi-request upload of a large folder)."""
    _open_job(job_id)
    db_session().rollback()  # release the row before the (possibly long) staging
    stager, specs, _ = _stage_request(("paths",))
    session = db_session()
    with _storing(session, stager):
        job = _open_job(job_id)
        stager.commit()
        scans = add_scans(session, job, specs)
        refresh_job(session, job_id)
        session.add(AuditEvent(user_id=current_user().id, action="job.add_files", target=f"job:{job_id}",
                               detail={"scans": len(scans)}))
    if scans:
        _dispatch(job_id, [s.id for s in scans])
    return jsonify(id=job_id, status_url=_status_url(job_id), added=len(scans), total=job.total), 202


@bp.post("/jobs/<int:job_id>/close")
def close_job_route(job_id: int) -> Response:
    """Seal an open job: no more files; it becomes done when every scan is classified or failed."""
    no_body()
    session = db_session()
    job = _open_job(job_id)
    job.sealed = True
    job = refresh_job(session, job_id)
    session.add(AuditEvent(user_id=current_user().id, action="job.close", target=f"job:{job_id}"))
    session.commit()
    return jsonify(job_json(job))


def _status_body(job_id: int) -> dict[str, Any]:
    # The row's columns, not an ORM object: a poll reads one row and never changes it.
    session = db_session()
    row = session.execute(select(*Job.__table__.columns).where(Job.id == job_id)).first()
    if row is None:
        raise ApiError(404, "not_found", f"job {job_id} does not exist")
    return job_status_body(session, row)


@bp.get("/jobs/<int:job_id>")
def job_status(job_id: int) -> Response:
    """Status and counters of one job; 304 with no body when If-None-Match names its current ETag."""
    return conditional_json(_status_body(job_id), request)


@bp.get("/jobs/<int:job_id>/events")
def job_events(job_id: int) -> Response:
    """The job's status as server-sent events: now, then each time it changes, until it is done."""
    body = _status_body(job_id)
    db_session().close()  # the stream may last minutes: it must not hold a database connection
    if not request.environ.get("wsgi.multithread"):
        # A server that answers one request at a time per process (gunicorn's sync worker) would
        # serve nobody else while a stream is open.
        return _refuse_stream("streams_unavailable", "this web server answers one request at a time per "
                              f"process, so it holds no streams; poll GET /api/v1/jobs/{job_id} instead")
    tag = json_etag(body)
    try:
        stream = EventStream(app_state().job_watch, job_id, tag, body)
    except TooManyStreams:
        limit = app_state().job_watch.max_streams
        held = f"already holds its {limit} status streams" if limit else "holds no status streams"
        return _refuse_stream("too_many_streams", f"this web process {held} (JOB_EVENTS_MAX_STREAMS); "
                              f"poll GET /api/v1/jobs/{job_id} instead")
    response = Response(stream, mimetype="text/event-stream")
    # Not cached, and not held back by a buffering proxy (nginx honours X-Accel-Buffering).
    response.headers.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return response


def _refuse_stream(error: str, detail: str) -> Response:
    refused = json_error(503, error, detail)
    refused.headers["Retry-After"] = "30"
    return refused


@bp.get("/jobs/<int:job_id>/files")
def job_files(job_id: int) -> Response:
    """The files a job holds, one entry per file (not per frame) with its content hashes, so a
    client can resume an interrupted upload without sending again what the job already has."""
    job = get_or_404(Job, job_id, "job")
    rows = db_session().execute(
        select(Scan.path, Scan.study, Scan.sha256, Scan.sent_sha256, func.count(Scan.id))
        .where(Scan.job_id == job_id).group_by(Scan.path, Scan.study, Scan.sha256, Scan.sent_sha256)
        .order_by(Scan.path)).all()
    files = [{"path": path, "study": study, "sha256": sha, "sent_sha256": sent or sha, "frames": frames}
             for path, study, sha, sent, frames in rows]
    return jsonify(id=job_id, sealed=job.sealed, status=job.status, files=files)


@bp.get("/jobs/<int:job_id>/results")
def job_results(job_id: int) -> Response:
    """Every scan of a job with its five predictions and the ensemble, and a summary per study."""
    job = get_or_404(Job, job_id, "job")
    scans = db_session().execute(select(Scan).where(Scan.job_id == job_id).order_by(Scan.id)
                                 .options(selectinload(Scan.predictions))).scalars().all()
    shown = [scan_json(s, s.predictions) for s in scans]
    studies = study_summaries(shown)
    # each scan's current review too, so a per-job export carries the reviewed label like /results does
    reviews = _current_reviews(db_session(), job_id)
    for scan in shown:
        scan["review"] = review_json(reviews.get(scan["id"]))
    body: dict[str, Any] = {"job": job_json(job), "scans": shown, "studies": studies,
                            "classes": known_classes(db_session())}
    return jsonify(body)


def _current_reviews(session: Session, job_id: int) -> dict[int, Review]:
    """scan id -> current review, for the scans of one job that have one (their authors loaded in one go)."""
    current = current_review_ids()
    rows = session.execute(
        select(Review).join(current, current.c.review_id == Review.id).join(Scan, Scan.id == Review.scan_id)
        .where(Scan.job_id == job_id).options(selectinload(Review.user), selectinload(Review.withdrawn_by_user))
    ).scalars()
    return {review.scan_id: review for review in rows}
