"""The OpenAPI 3.1 document of the HTTP API: web/openapi.yaml, loaded once, with each operation's
required role filled in from web.access.ROUTE_ROLES (the table that enforces it)."""
from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any, Iterator

import yaml
from flask import Flask

from web.access import PUBLIC, ROUTE_ROLES

DOCUMENT_PATH = Path(__file__).with_name("openapi.yaml")
HTTP_METHODS = ("get", "put", "post", "delete", "patch")
_EXTENSION_KEY = "mri.openapi"
_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


@functools.cache
def load_document() -> dict[str, Any]:
    """web/openapi.yaml as a dict, read once per process (callers must not change it)."""
    return yaml.safe_load(DOCUMENT_PATH.read_text(encoding="utf-8"))


def openapi_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path: /api/v1/jobs/<int:job_id> -> /api/v1/jobs/{job_id}."""
    return _CONVERTER.sub(r"{\1}", rule)


def route_endpoints(app: Flask) -> dict[tuple[str, str], str]:
    """(OpenAPI path, lower-case method) -> endpoint for every rule of the app (HEAD/OPTIONS left out)."""
    found = {}
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found[(openapi_path(rule.rule), method.lower())] = rule.endpoint
    return found


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path, method, operation) for every operation of the document, in its order."""
    for path, item in document["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield path, method, item[method]


def document_for(app: Flask) -> dict[str, Any]:
    """The document as this app serves it: `x-required-role` and `security` on each operation."""
    cached = app.extensions.get(_EXTENSION_KEY)
    if cached is None:
        cached = copy.deepcopy(load_document())
        endpoints = route_endpoints(app)
        for path, method, operation in operations(cached):
            role = ROUTE_ROLES.get(endpoints.get((path, method), ""))
            if role is None:
                continue  # not a route of this app: tests/web/test_openapi.py says so
            operation["x-required-role"] = role
            if role == PUBLIC:
                operation["security"] = []
        app.extensions[_EXTENSION_KEY] = cached
    return cached
