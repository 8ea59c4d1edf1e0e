"""GET /api/v1/results: filtered, sorted, paginated stored predictions, or a streamed export (CSV or JSON)."""
from __future__ import annotations

from typing import Callable, Iterator

from flask import Response, jsonify, request
from sqlalchemy.orm import Session

from web.api import bp
from web.errors import ApiError
from web.exports import export_filename, iter_csv, iter_json
from web.queries import FILTER_ARGS, PAGING_ARGS, ResultFilter, parse_filter, query_results
from web.state import app_state, db_session
from web.validation import accepts_query

# format -> (rows writer, content type, file extension); these ignore paging: every matching row.
EXPORTS: dict[str, tuple[Callable[[Session, ResultFilter], Iterator[str]], str, str]] = {
    "csv": (iter_csv, "text/csv", "csv"),
    "json_all": (iter_json, "application/json", "json"),
}


@bp.get("/results")
@accepts_query(*FILTER_ARGS, *PAGING_ARGS, "format")
def results() -> Response:
    """Filters: label, model (default ensemble), min_confidence, max_confidence, min_agreement,
    max_agreement, model_version, study, job, since, until, reviewed, disagrees (reviewed label
    differs from the ensemble's); sort; format=json|csv|json_all."""
    flt = parse_filter(request.args)
    fmt = request.args.get("format", "json")
    if fmt in EXPORTS:
        writer, mimetype, extension = EXPORTS[fmt]
        factory = app_state().session_factory

        def generate() -> Iterator[str]:
            # The stream outlives the request's session, so it reads through its own.
            with factory() as session:
                yield from writer(session, flt)

        response = Response(generate(), mimetype=mimetype)
        # the name says which results these are (job, filters, day), not always "results.csv"
        response.headers.set("Content-Disposition", "attachment", filename=export_filename(flt, extension))
        return response
    if fmt != "json":
        raise ApiError(400, "bad_filter", f"format must be json, {' or '.join(EXPORTS)}")
    return jsonify(query_results(db_session(), flt))
