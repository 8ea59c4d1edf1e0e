"""Server-rendered pages: upload, job status, results with filters, model versions."""
from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, render_template, request
from sqlalchemy import select

from db.models import Job, ModelVersion
from models import ENSEMBLE_NAME as ENSEMBLE, MODEL_NAMES
from web.auth import current_user, has_role
from web.errors import ApiError
from web.queries import FILTER_ARGS, PAGING_ARGS, parse_filter, query_results
from web.serialize import job_json, model_version_json
from web.state import app_state, db_session, get_or_404
from web.validation import refuse_unknown

bp = Blueprint("pages", __name__)


@bp.app_context_processor
def _page_globals() -> dict:
    # The CSRF token comes from Flask-WTF's csrf_token() in the templates.
    return {"user": current_user() if request else None}


@bp.get("/")
def upload() -> str:
    """Upload form (files or a whole folder) and the latest jobs."""
    jobs = db_session().execute(select(Job).order_by(Job.id.desc()).limit(20)).scalars().all()
    settings = app_state().settings
    return render_template("upload.html", jobs=[job_json(j) for j in jobs],
                           can_upload=has_role(current_user(), "uploader"),
                           max_upload_mb=settings.max_upload_mb)


@bp.get("/jobs/<int:job_id>")
def job_page(job_id: int) -> str:
    """Status page: polls the job's JSON until done, then shows per-scan results."""
    return render_template("job.html", job=job_json(get_or_404(Job, job_id, "job")), model_names=MODEL_NAMES)


@bp.get("/results")
def results_page() -> str:
    """Stored results with filters, pagination and a CSV link."""
    args = {k: v for k, v in request.args.items() if v != ""}
    error = ""
    try:
        refuse_unknown(args, (*FILTER_ARGS, *PAGING_ARGS), "filter(s)")
        flt = parse_filter(args)
        page = query_results(db_session(), flt)
    except ApiError as exc:
        error, page = exc.detail, {"total": 0, "results": [], "page": 1, "per_page": 50}
    base = {k: v for k, v in args.items() if k not in ("page", "format")}
    pages = max(1, -(-page["total"] // page["per_page"]))
    return render_template(
        "results.html", page=page, args=args, error=error, models=(ENSEMBLE, *MODEL_NAMES),
        csv_url="/api/v1/results?" + urlencode({**base, "format": "csv"}), pages=pages,
        prev_url=f"?{urlencode({**base, 'page': page['page'] - 1})}" if page["page"] > 1 else "",
        next_url=f"?{urlencode({**base, 'page': page['page'] + 1})}" if page["page"] < pages else "")


@bp.get("/models")
def models_page() -> str:
    """Model versions: status, backbone weights, validation metrics; reviewers can activate."""
    versions = db_session().execute(select(ModelVersion).order_by(ModelVersion.id.desc())).scalars().all()
    return render_template("models.html", versions=[model_version_json(v) for v in versions],
                           can_activate=has_role(current_user(), "reviewer"))
