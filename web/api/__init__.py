"""The versioned JSON API under /api/v1 (contract: issue 3 and DESIGN.md)."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def load_routes() -> Blueprint:
    """Import the route modules (they attach to `bp`) and return the blueprint."""
    from web.api import admin, jobs, models, results  # noqa: F401

    return bp
