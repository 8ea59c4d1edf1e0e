"""GET /api/v1/openapi.json: the API's OpenAPI 3.1 document."""
from __future__ import annotations

from flask import Response, current_app, jsonify

from web.api import bp
from web.openapi import document_for


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """The OpenAPI document of every route, with the role each one needs."""
    return jsonify(document_for(current_app._get_current_object()))
