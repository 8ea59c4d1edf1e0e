"""GET /api/v1/results: filtered, paginated stored predictions, or a streamed CSV export."""
from __future__ import annotations

from flask import Response, jsonify, request, stream_with_context

from web.api import bp
from web.auth import require_role
from web.errors import ApiError
from web.queries import iter_csv, parse_filter, query_results
from web.state import db_session


@bp.get("/results")
@require_role("viewer")
def results() -> Response:
    """Filters: label, model (default ensemble), min_confidence, study, job, since, until; format=json|csv."""
    flt = parse_filter(request.args)
    fmt = request.args.get("format", "json")
    if fmt == "csv":
        response = Response(stream_with_context(iter_csv(db_session(), flt)), mimetype="text/csv")
        response.headers["Content-Disposition"] = "attachment; filename=results.csv"
        return response
    if fmt != "json":
        raise ApiError(400, "bad_filter", "format must be json or csv")
    return jsonify(query_results(db_session(), flt))
