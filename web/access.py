"""Who may call which route: one declared table, enforced before any view runs.

ROUTE_ROLES names the minimum role (or PUBLIC) of every endpoint. `guard` checks it on
every request: 401 (API) or a redirect to the login page (pages) without working
credentials, 403 below the role, then CSRF for state-changing requests from a browser
session. An endpoint missing from the table is refused, and tests/web/test_web_access.py
walks app.url_map against the table, so a new route cannot slip through unlisted.
"""
from __future__ import annotations

import logging

from flask import Flask, Response, current_app, g, redirect, request, url_for

from db.models import ROLES
from web.auth import current_user, has_role
from web.errors import ApiError, wants_json

logger = logging.getLogger(__name__)
PUBLIC = "public"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

ROUTE_ROLES: dict[str, str] = {
    "static": PUBLIC,
    "auth.login": PUBLIC,
    "auth.logout": PUBLIC,
    "monitoring.healthz": PUBLIC,
    "pages.favicon": PUBLIC,  # the tab icon, asked by browsers before any login
    "monitoring.metrics": "viewer",
    # pages
    "pages.upload": "viewer",  # the form itself shows only to uploaders
    "pages.job_page": "viewer",
    "pages.results_page": "viewer",
    "pages.models_page": "viewer",  # the activate / roll back buttons show to reviewers
    "pages.training_runs_page": "viewer",  # the "queue a run" form shows to admins
    "pages.scan_page": "viewer",  # the review control shows to reviewers
    "pages.scan_image": "viewer",  # the scan's picture: never without a login
    # jobs and results
    "api.create_job_route": "uploader",
    "api.add_files_route": "uploader",
    "api.close_job_route": "uploader",
    "api.job_status": "viewer",
    "api.job_events": "viewer",
    "api.job_results": "viewer",
    "api.job_files": "viewer",
    # the API's contract: the OpenAPI document and the reference page made from it
    "api.openapi_document": "viewer",
    "apidocs.api_docs": "viewer",
    "api.results": "viewer",
    # scans and reviews
    "api.scan": "viewer",
    "api.review_scan": "reviewer",
    "api.withdraw_scan_review": "reviewer",
    "api.scan_explanation": "viewer",  # a Grad-CAM overlay, computed on demand
    # models and training
    "api.list_models": "viewer",
    "api.activate_model": "reviewer",
    "api.create_training_run": "admin",
    "api.training_run": "viewer",
    "api.list_training_runs": "viewer",
    # tokens
    "api.create_token": "admin",
    "api.list_tokens": "admin",
    "api.revoke_token": "admin",
}


def _check_table() -> None:
    unknown = {e: r for e, r in ROUTE_ROLES.items() if r != PUBLIC and r not in ROLES}
    if unknown:
        raise RuntimeError(f"ROUTE_ROLES names unknown roles: {unknown}")


_check_table()


def table_problems(app: Flask) -> list[str]:
    """Endpoints of `app` missing from the table, table entries with no endpoint, and views whose
    require_role mark disagrees with the table."""
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    problems = [f"{e}: not in web.access.ROUTE_ROLES (refused until it is)"
                for e in sorted(endpoints - set(ROUTE_ROLES))]
    problems += [f"{e}: in ROUTE_ROLES but no such route" for e in sorted(set(ROUTE_ROLES) - endpoints)]
    for endpoint, view in sorted(app.view_functions.items()):
        declared = getattr(view, "declared_role", None)
        if declared is not None and endpoint in ROUTE_ROLES and declared != ROUTE_ROLES[endpoint]:
            problems.append(f"{endpoint}: marked require_role({declared!r}) but ROUTE_ROLES says "
                            f"{ROUTE_ROLES[endpoint]!r}")
    return problems


def guard() -> Response | None:
    """before_request: enforce the endpoint's role, then CSRF for browser-session writes."""
    endpoint = request.endpoint
    if endpoint is None:  # no route matched; routing answers 404/405
        return None
    role = ROUTE_ROLES.get(endpoint)
    if role is None:
        logger.error("refused %s %s: endpoint %s is not in web.access.ROUTE_ROLES",
                     request.method, request.path, endpoint)
        raise ApiError(403, "forbidden", "this route has no declared access rule, so it is refused")
    if role != PUBLIC:
        response = _authorize(role)
        if response is not None:
            return response
    # Browsers send cookies on their own but never an Authorization header, so only requests
    # that are not bearer-authenticated (sessions, and the login form) need a CSRF token.
    if request.method not in SAFE_METHODS and g.get("auth_via") != "token":
        current_app.extensions["csrf"].protect()
    return None


def _authorize(role: str) -> Response | None:
    user = current_user()
    if user is None:
        if not wants_json():
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        raise ApiError(401, "unauthorized", g.get("auth_problem") or
                       "send Authorization: Bearer <token> (see `flask --app web create-token`)")
    if not has_role(user, role):
        raise ApiError(403, "forbidden", f"this needs the {role} role; you are {user.role}")
    return None


def init_app(app: Flask) -> None:
    """Install the guard; refuse to start when a require_role mark contradicts the table."""
    problems = table_problems(app)
    contradictions = [p for p in problems if "marked require_role" in p]
    if contradictions:
        raise RuntimeError("access table and view marks disagree: " + "; ".join(contradictions))
    for problem in problems:
        logger.error("access table: %s", problem)
    app.before_request(guard)
