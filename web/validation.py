"""Request shapes: JSON bodies, form fields and query parameters outside what a route reads are refused.

A misspelt or misplaced field (`{"epochs": 1}` beside `params`, `?lable=glioma`) would
otherwise be dropped silently and the request would do something else than asked.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Iterable, TypeVar

from flask import current_app, request

from web.errors import ApiError

# Row ids are PostgreSQL `integer` columns; a larger number in a URL would reach the database
# and fail there (a 500), so it is answered 404 before any view runs.
MAX_ID = 2**31 - 1

F = TypeVar("F", bound=Callable)


def refuse_unknown(names: Iterable[str], allowed: Iterable[str], what: str) -> None:
    """422 unknown_fields naming every name not in `allowed` (`what` says where they were)."""
    allowed = sorted(set(allowed))
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise ApiError(422, "unknown_fields", f"unknown {what}: {', '.join(unknown)}; "
                                              f"allowed: {', '.join(allowed) or 'none'}")


def json_object(allowed: Iterable[str]) -> dict[str, Any]:
    """The JSON object body ({} when the body is empty): 415 when not JSON, 400 when malformed,
    422 naming fields outside `allowed`."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send Content-Type: application/json (or no body)")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "bad_body", f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_body", "send a JSON object (or no body)")
    refuse_unknown(body, allowed, "JSON field(s)")
    return body


def no_body() -> None:
    """Refuse any content on a route that takes none (an empty JSON object is fine)."""
    json_object(())


def accepts_query(*names: str) -> Callable[[F], F]:
    """Declare the query parameters a route reads; refuse_unknown_query refuses any other."""

    def decorator(view: F) -> F:
        view.query_args = frozenset(names)  # type: ignore[attr-defined]
        return view

    return decorator


def refuse_unknown_query() -> None:
    """before_request of the API: 422 for query parameters the route did not declare."""
    view = current_app.view_functions.get(request.endpoint or "")
    if view is not None and request.args:
        refuse_unknown(request.args.keys(), getattr(view, "query_args", ()), "query parameter(s)")


def refuse_out_of_range_ids() -> None:
    """before_request: 404 for an id in the URL past MAX_ID (no such row can exist)."""
    for name, value in (request.view_args or {}).items():
        if isinstance(value, int) and value > MAX_ID:
            raise ApiError(404, "not_found", f"{name.removesuffix('_id')} {value} does not exist")
