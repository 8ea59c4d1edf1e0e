"""GET /api/v1/results: filtered, paginated stored predictions, or a streamed CSV export."""
from __future__ import annotations

from typing import Iterator

from flask import Response, jsonify, request

from web.api import bp
from web.errors import ApiError
from web.queries import FILTER_ARGS, PAGING_ARGS, iter_csv, parse_filter, query_results
from web.state import app_state, db_session
from web.validation import accepts_query


@bp.get("/results")
@accepts_query(*FILTER_ARGS, *PAGING_ARGS, "format")
def results() -> Response:
    """Filters: label, model (default ensemble), min_confidence, study, job, since, until, reviewed,
    disagrees (reviewed label differs from the ensemble's); format=json|csv."""
    flt = parse_filter(request.args)
    fmt = request.args.get("format", "json")
    if fmt == "csv":
        factory = app_state().session_factory

        def generate() -> Iterator[str]:
            # The stream outlives the request's session, so it reads through its own.
            with factory() as session:
                yield from iter_csv(session, flt)

        response = Response(generate(), mimetype="text/csv")
        response.headers["Content-Disposition"] = "attachment; filename=results.csv"
        return response
    if fmt != "json":
        raise ApiError(400, "bad_filter", "format must be json or csv")
    return jsonify(query_results(db_session(), flt))
