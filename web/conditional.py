"""Conditional GET for polled JSON: a strong ETag over the body, 304 with no body when it is unchanged."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import Request, Response, jsonify

# Pollers keep the body and ask again; `no-cache` makes browsers revalidate every time
# (sending If-None-Match) instead of showing a stale status, and `private` keeps shared
# caches out of a per-user answer.
CACHE_CONTROL = "private, no-cache"


def json_etag(body: Any) -> str:
    """A strong ETag for a JSON body: SHA-256 of its canonical form, so equal bodies share a tag."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def conditional_json(body: Any, request: Request) -> Response:
    """`body` as JSON with its ETag, or 304 and no body when the request's If-None-Match names it."""
    tag = json_etag(body)
    if request.if_none_match.contains_weak(tag):
        # Nothing to serialise: the client has this body already.
        response = Response(status=304)
    else:
        response = jsonify(body)
    response.set_etag(tag)
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response
