"""The versioned JSON API under /api/v1 (contract: issue 3 and DESIGN.md)."""
from __future__ import annotations

from flask import Blueprint

from web.validation import refuse_unknown_query

bp = Blueprint("api", __name__, url_prefix="/api/v1")
# Runs after web.access.guard (app hooks first), so a caller without access gets 401/403, not 422.
bp.before_request(refuse_unknown_query)


def load_routes() -> Blueprint:
    """Import the route modules (they attach to `bp`) and return the blueprint."""
    from web.api import admin, explanations, jobs, models, openapi, results, scans  # noqa: F401

    return bp
