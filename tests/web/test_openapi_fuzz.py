"""A bounded schemathesis run of every documented operation against the app (in process, WSGI).

Each operation gets requests generated from the document (derandomized, a few examples
each) sent with an admin token; every answer must be no server error, carry a documented
status and content type, and match the documented schema. An app with a job, a classified
scan and a token makes the path parameters 1 hit real rows as well as missing ones.
"""
from __future__ import annotations

import copy

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from web.openapi import load_document
from web_helpers import png_bytes, upload_data

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
# Revoking tokens would revoke the caller's own token (id 1) half-way through; it is checked
# by tests/web/test_openapi.py and tests/web/test_web_tokens.py instead.
SKIPPED = {("/api/v1/tokens/{token_id}", "delete")}


def fuzz_document() -> dict:
    """The document without the skipped operations."""
    document = copy.deepcopy(load_document())
    for path, method in SKIPPED:
        del document["paths"][path][method]
    return document


@pytest.fixture()
def fuzz_app(app, auth, active_version, monkeypatch):
    """The app with a job (id 1), a classified scan (id 1) and an admin token; the token in app.config.

    It is served as a threaded server would serve it (so status streams are allowed), and a stream
    ends after its first status instead of watching the open job for minutes.
    """
    import web.job_events
    from db.models import Job, Prediction, Scan

    monkeypatch.setattr(web.job_events, "STREAM_MAX_S", 0.0)
    wsgi_app = app.wsgi_app
    app.wsgi_app = lambda environ, start_response: wsgi_app({**environ, "wsgi.multithread": True}, start_response)

    headers = auth("admin")
    with app.extensions["mri"].session_factory() as session:
        job = Job(name="fuzz", sealed=False, status="queued")
        session.add(job)
        session.flush()
        scan = Scan(job_id=job.id, sha256="f" * 64, path="s/a.png", study="s", status="classified",
                    model_version_id=active_version)
        session.add(scan)
        session.flush()
        for name in ("resnet50", "ensemble"):
            session.add(Prediction(scan_id=scan.id, model_version_id=active_version, model_name=name,
                                   label="glioma", confidence=0.9, agreement=1 if name == "ensemble" else None,
                                   probabilities={c: 0.9 if c == "glioma" else 0.1 / 3 for c in CLASSES}))
        session.commit()
    app.test_client().post("/api/v1/jobs", data=upload_data([("s/b.png", png_bytes(4))]), headers=headers)
    app.config["FUZZ_HEADERS"] = headers
    return app


@pytest.fixture()
def api_schema(fuzz_app):
    return schemathesis.openapi.from_dict(fuzz_document())


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=6, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case, fuzz_app):
    case.call_and_validate(app=fuzz_app, headers=fuzz_app.config["FUZZ_HEADERS"], checks=CHECKS)
