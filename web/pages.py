"""Server-rendered pages: upload, job status, results with filters, scans, model versions, training runs.

The pages read the database directly for their first paint; their scripts (web/static) poll and
write through the JSON API only, so every change goes through the API's checks and audit.
"""
from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, redirect, render_template, request, url_for
from sqlalchemy import select

from db.models import Job, ModelVersion, Scan, TrainingRun
from models import ENSEMBLE_NAME as ENSEMBLE, MODEL_NAMES
from tasks.reviews import allowed_labels, current_review, review_history, reviewable
from tasks.train import ALLOWED_PARAMS
from web import formatting, results_view, scan_view, training_view
from web.access import ROUTE_ROLES
from web.auth import current_user, has_role
from web.errors import ApiError
from web.queries import FILTER_ARGS, PAGING_ARGS, known_classes, parse_filter, query_results
from web.serialize import job_json, model_version_json, scan_detail_json, training_run_json
from web.state import app_state, db_session, get_or_404
from web.validation import refuse_unknown
from web.waiting import run_phrase, run_under_way, waiting_detail

bp = Blueprint("pages", __name__)
RUNS_SHOWN = 50


def can(endpoint: str) -> bool:
    """True when the caller's role reaches what web.access.ROUTE_ROLES asks for `endpoint`."""
    return has_role(current_user(), ROUTE_ROLES[endpoint])


@bp.app_context_processor
def _page_globals() -> dict:
    # The CSRF token comes from Flask-WTF's csrf_token() in the templates.
    return {"user": current_user() if request else None, "can": can}


bp.add_app_template_filter(formatting.when, "when")
bp.add_app_template_filter(formatting.figure, "figure")
bp.add_app_template_filter(formatting.ago, "ago")
bp.add_app_template_filter(formatting.exact, "exact")
bp.add_app_template_filter(formatting.class_colour, "class_colour")


@bp.get("/favicon.ico")
def favicon():
    """The tab icon, for clients that ask /favicon.ico without reading the page's <link rel="icon">."""
    return redirect(url_for("static", filename="favicon.svg"), code=301)


@bp.get("/")
def upload() -> str:
    """Upload (drop or pick folders, files or a zip; sent in parts) and the latest jobs."""
    jobs = db_session().execute(select(Job).order_by(Job.id.desc()).limit(20)).scalars().all()
    settings = app_state().settings
    return render_template("upload.html", jobs=[job_json(j) for j in jobs],
                           can_upload=has_role(current_user(), "uploader"),
                           max_upload_mb=settings.max_upload_mb)


@bp.get("/jobs/<int:job_id>")
def job_page(job_id: int) -> str:
    """Live progress, then a summary per study, failures by reason and a sortable table of the scans."""
    job = job_json(get_or_404(Job, job_id, "job"))
    job["detail"] = waiting_detail(db_session(), job["detail"])
    return render_template("job.html", job=job, model_names=MODEL_NAMES,
                           class_colours=formatting.class_colours(known_classes(db_session())))


@bp.get("/results")
def results_page() -> str:
    """Stored results with filters, sort, pages, and CSV/JSON exports of exactly what is filtered."""
    args = {k: v for k, v in request.args.items() if v != ""}
    error = ""
    try:
        refuse_unknown(args, (*FILTER_ARGS, *PAGING_ARGS), "filter(s)")
        page = query_results(db_session(), parse_filter(args))
    except ApiError as exc:
        error, page = exc.detail, {"total": 0, "results": [], "page": 1, "per_page": 50}
    pages = max(1, -(-page["total"] // page["per_page"]))
    return render_template(
        "results.html", page=page, args=args, error=error, models=(ENSEMBLE, *MODEL_NAMES), pages=pages,
        choices=results_view.choices(db_session()), headers=results_view.sort_headers(args),
        page_links=results_view.page_links(args, page["page"], pages), exports=results_view.export_urls(args),
        active_filters=results_view.active_filters(args), n_models=len(MODEL_NAMES),
        disagree_url="?" + urlencode({**{k: v for k, v in args.items() if k != "page"},
                                      "max_agreement": len(MODEL_NAMES) - 1}))


@bp.get("/models")
def models_page() -> str:
    """Every version with its evaluation figures beside the active one's; reviewers activate or roll back."""
    session = db_session()
    versions = session.execute(select(ModelVersion).order_by(ModelVersion.id.desc())).scalars().all()
    # The run that produced each version (its pool summary); the latest one if several did.
    runs = {run.model_version_id: run for run in session.execute(
        select(TrainingRun).where(TrainingRun.model_version_id.is_not(None)).order_by(TrainingRun.id)).scalars()}
    shown = [model_version_json(v, runs.get(v.id)) for v in versions]
    active = next((v for v in shown if v["status"] == "active"), None)
    # With no version yet, a run already under way is what people wait for, not a bundle to register.
    under_way = None if shown else run_under_way(session)
    return render_template("models.html", versions=shown, active=active,
                           waiting_for=run_phrase(under_way) if under_way else "",
                           reports={v["id"]: training_view.evaluation_report(v) for v in shown},
                           can_activate=can("api.activate_model"))


@bp.get("/training-runs")
def training_runs_page() -> str:
    """Queued and running runs with live progress, finished ones with the gate's decision."""
    session = db_session()
    runs = session.execute(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(RUNS_SHOWN)).scalars().all()
    names = training_view.user_names(session, [r.user_id for r in runs])
    return render_template("training_runs.html",
                           runs=[{**training_view.run_view(training_run_json(r)), "queued_by": names.get(r.user_id)}
                                 for r in runs],
                           can_queue=can("api.create_training_run"),
                           fields=training_view.param_fields(ALLOWED_PARAMS))


@bp.get("/scans/<int:scan_id>")
def scan_page(scan_id: int) -> str:
    """One scan: its picture, every model's probabilities, the ensemble, its review, its neighbours."""
    session = db_session()
    scan = get_or_404(Scan, scan_id, "scan")
    review = current_review(session, scan_id)
    detail = scan_detail_json(scan, review, review_history(session, scan_id))
    user = current_user()
    picture, picture_error = scan_view.picture_info(app_state().settings, scan)
    return render_template(
        "scan.html", scan=detail, job=job_json(scan.job), model_names=MODEL_NAMES,
        neighbours=scan_view.neighbours(session, scan), labels=allowed_labels(session, scan),
        version=session.get(ModelVersion, scan.model_version_id) if scan.model_version_id else None,
        picture=picture, picture_error=picture_error, can_review=can("api.review_scan") and reviewable(scan),
        can_withdraw=review is not None and can("api.withdraw_scan_review") and (
            review.user_id == user.id or has_role(user, "admin")))


@bp.get("/scans/<int:scan_id>/image")
def scan_image(scan_id: int):
    """The scan's picture as PNG (logged-in users only): its own window, or ?center=&width= in its values."""
    scan = get_or_404(Scan, scan_id, "scan")
    return scan_view.image_response(app_state().settings, scan, request)
