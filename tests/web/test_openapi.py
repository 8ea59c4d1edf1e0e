"""The OpenAPI document is the API's contract: every route is in it and nothing else, each operation's
query parameters and role are the ones the app enforces, and real answers (successes and errors,
from the test client) validate against it with openapi-core."""
from __future__ import annotations

import io
import re

from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_spec_validator import validate as validate_spec
from werkzeug.test import EnvironBuilder

from db.models import Job, Prediction, Scan, TrainingRun
from web.access import PUBLIC, ROUTE_ROLES
from web.openapi import document_for, load_document, operations, route_endpoints
from web_helpers import build_app, png_bytes, upload_data

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
MODELS = ["resnet50", "vgg16", "custom_cnn", "svm", "random_forest"]
CLOSED_PORT_URL = "postgresql+psycopg://postgres@127.0.0.1:1/x"


def documented_routes(app) -> dict[tuple[str, str], str]:
    """The app's routes the document must describe: /api/v1/..., /healthz and /metrics."""
    return {key: endpoint for key, endpoint in route_endpoints(app).items()
            if key[0].startswith("/api/v1/") or key[0] in ("/healthz", "/metrics")}


def test_the_document_is_valid_openapi_3_1():
    document = load_document()
    assert document["openapi"].startswith("3.1")
    validate_spec(document)


def test_every_route_is_documented_and_every_documented_operation_is_a_route(app):
    routes = documented_routes(app)
    documented = {(path, method): op["operationId"] for path, method, op in operations(load_document())}
    assert sorted(set(routes) - set(documented)) == [], "routes missing from web/openapi.yaml"
    assert sorted(set(documented) - set(routes)) == [], "documented operations the app does not have"
    # operationId is the view's name, so a report or the docs page names the code that answers
    assert {key: endpoint.split(".")[-1] for key, endpoint in routes.items()} == documented


def test_each_operation_documents_exactly_the_query_parameters_its_view_accepts(app):
    routes = documented_routes(app)
    for path, method, op in operations(load_document()):
        if not path.startswith("/api/v1/"):
            continue
        view = app.view_functions[routes[(path, method)]]
        declared = {p["name"] for p in op.get("parameters", []) if p.get("in") == "query"}
        assert declared == set(getattr(view, "query_args", ())), f"{method.upper()} {path}"


def test_training_parameters_are_those_training_accepts():
    from tasks.train import ALLOWED_PARAMS

    body = load_document()["paths"]["/api/v1/training-runs"]["post"]["requestBody"]
    params = body["content"]["application/json"]["schema"]["properties"]["params"]
    assert set(params["properties"]) == set(ALLOWED_PARAMS)


def test_the_served_document_carries_each_routes_role_from_the_access_table(client, auth):
    response = client.get("/api/v1/openapi.json", headers=auth("viewer"))
    assert response.status_code == 200 and response.is_json
    served = response.get_json()
    routes = documented_routes(client.application)
    for path, method, op in operations(served):
        role = ROUTE_ROLES[routes[(path, method)]]
        assert op["x-required-role"] == role, f"{method.upper()} {path}"
        assert (op.get("security") == []) == (role == PUBLIC)
    # the maintained file, unchanged apart from what the access table adds
    for path, method, op in operations(served):
        original = load_document()["paths"][path][method]
        assert {k: v for k, v in op.items() if k != "x-required-role"} == \
            {**original, **({"security": []} if "security" in op else {})}
    assert client.get("/api/v1/openapi.json").status_code == 401


def test_the_docs_page_shows_every_operation_without_scripts(client, auth):
    response = client.get("/api-docs", headers=auth("viewer"))
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    for path, method, op in operations(load_document()):
        assert f"<code>{method.upper()} {path}</code>" in page
        assert f'id="op-{op["operationId"]}"' in page
    for name in load_document()["components"]["schemas"]:
        assert f'id="schema-{name}"' in page
    assert "(role: uploader)" in page and "<code>unknown_fields</code>" in page
    # the CSP allows no inline script or style (scripts from /static are fine)
    assert re.search(r"<script(?![^>]*\bsrc=)", page) is None and " style=" not in page
    assert "script-src" not in response.headers["Content-Security-Policy"]  # default-src 'self' only
    assert client.get("/api-docs").status_code == 302  # a browser without a login goes to /login


# --------------------------------------------------------------------------- real answers


def first_event(stream: str) -> dict:
    """The fields of a server-sent event stream's first event (retry as a number)."""
    event: dict = {}
    for line in stream.split("\n\n", 1)[0].splitlines():
        field, _, value = line.partition(": ")
        if field and not line.startswith(":"):
            event[field] = int(value) if field == "retry" else value
    return event


class Contract:
    """Validates each answer against the document and remembers which operations were exercised."""

    def __init__(self, app) -> None:
        # openapi-core hands text bodies over as bytes; the document calls them strings.
        text = {media: (lambda data: data.decode("utf-8") if isinstance(data, bytes) else data)
                for media in ("text/csv", "text/plain")}
        # It validates one value per body: for an event stream, its first event (the document
        # describes each event; schemathesis checks every one in test_openapi_fuzz.py).
        text["text/event-stream"] = lambda data: first_event(data.decode("utf-8") if isinstance(data, bytes) else data)
        self.spec = OpenAPI.from_dict(load_document(), config=Config(extra_media_type_deserializers=text))
        self.urls = app.url_map.bind("localhost")
        self.covered: set[str] = set()

    def check(self, response, expected: int, request_valid: bool = True):
        """Assert the status, validate the request (when it is meant to be valid) and the response."""
        assert response.status_code == expected, (response.request.method, response.request.path,
                                                   response.get_data(as_text=True)[:500])
        sent = response.request
        if request_valid and getattr(response, "request_copy", None) is not None:
            self.spec.validate_request(WerkzeugOpenAPIRequest(response.request_copy))
        # The response is matched to its operation by method and path; the body is not needed.
        bare = EnvironBuilder(method=sent.method, path=sent.path, query_string=sent.query_string.decode("latin-1"),
                              headers={"Authorization": sent.headers.get("Authorization", "")}).get_request()
        self.spec.validate_response(WerkzeugOpenAPIRequest(bare), WerkzeugOpenAPIResponse(response))
        endpoint, _ = self.urls.match(sent.path, sent.method)
        self.covered.add(endpoint.split(".")[-1])
        return response


class RecordingClient:
    """A test client that keeps a copy of each request whose body can be built twice (JSON, none),
    since the app consumes the one it is sent."""

    def __init__(self, client) -> None:
        self.client = client

    def open(self, path: str, method: str, **kwargs):
        copy = None
        if "data" not in kwargs or isinstance(kwargs["data"], (str, bytes)):
            copy = EnvironBuilder(path=path, method=method, **kwargs).get_request()
        response = self.client.open(path, method=method, **kwargs)
        response.request_copy = copy
        return response

    def get(self, path: str, **kwargs):
        return self.open(path, "GET", **kwargs)

    def post(self, path: str, **kwargs):
        return self.open(path, "POST", **kwargs)

    def delete(self, path: str, **kwargs):
        return self.open(path, "DELETE", **kwargs)




def _classified_scan(session, version_id: int) -> int:
    job = Job(name="contract", sealed=True, status="done", total=1, done=1)
    session.add(job)
    session.flush()
    scan = Scan(job_id=job.id, sha256="c" * 64, path="study/a.png", study="study", status="classified",
                model_version_id=version_id)
    session.add(scan)
    session.flush()
    for name in [*MODELS, "ensemble"]:
        session.add(Prediction(scan_id=scan.id, model_version_id=version_id, model_name=name, label="glioma",
                               confidence=0.7, probabilities={c: 0.7 if c == "glioma" else 0.1 for c in CLASSES},
                               agreement=5 if name == "ensemble" else None, latency_ms=3.0))
    session.commit()
    return scan.id


def test_real_answers_of_every_operation_validate_against_the_document(app, client, auth, session,
                                                                       active_version):
    contract = Contract(app)
    client = RecordingClient(client)
    admin, viewer, uploader, reviewer = auth("admin"), auth("viewer"), auth("uploader"), auth("reviewer")
    check = contract.check
    scan_id = _classified_scan(session, active_version)

    # jobs: upload in parts, list its files, poll (200 then 304), close, results
    created = check(client.post("/api/v1/jobs?open=1", data=upload_data([("s1/a.png", png_bytes(1))]),
                                headers=uploader), 202).get_json()
    job = created["id"]
    check(client.post(f"/api/v1/jobs/{job}/files", data=upload_data([("s1/b.png", png_bytes(2))]),
                      headers=uploader), 202)
    check(client.get(f"/api/v1/jobs/{job}/files", headers=viewer), 200)
    status = check(client.get(f"/api/v1/jobs/{job}", headers=viewer), 200)
    check(client.get(f"/api/v1/jobs/{job}", headers={**viewer, "If-None-Match": status.headers["ETag"]}), 304)
    check(client.post(f"/api/v1/jobs/{job}/close", headers=uploader), 200)
    check(client.get(f"/api/v1/jobs/{job}/results", headers=viewer), 200)
    check(client.get(f"/api/v1/jobs/{session.get(Scan, scan_id).job_id}/results", headers=viewer), 200)
    # a finished job's event stream: its status once, then the stream ends
    events = check(client.get(f"/api/v1/jobs/{session.get(Scan, scan_id).job_id}/events", headers=viewer,
                              environ_overrides={"wsgi.multithread": True}), 200)
    assert events.get_data(as_text=True).count("event: status") == 1

    # results: JSON page, CSV export
    page = check(client.get("/api/v1/results?label=glioma&min_confidence=0.5&per_page=10", headers=viewer), 200)
    assert page.get_json()["total"] == 1
    check(client.get("/api/v1/results?format=csv&model=svm", headers=viewer), 200)

    # scans and reviews
    check(client.get(f"/api/v1/scans/{scan_id}", headers=viewer), 200)
    check(client.post(f"/api/v1/scans/{scan_id}/review", json={"label": "meningioma", "note": "dural tail"},
                      headers=reviewer), 201)
    check(client.get("/api/v1/results?reviewed=true&disagrees=true", headers=viewer), 200)
    check(client.delete(f"/api/v1/scans/{scan_id}/review", headers=reviewer), 200)

    # explanations: queued for a worker; once its PNG is in the cache, the overlay, then 304
    explanation = f"/api/v1/scans/{scan_id}/explanation?model=vgg16"
    check(client.get(explanation, headers=viewer), 202)
    from tasks.explain import explanation_path
    explanation_path(app.extensions["mri"].settings, active_version, scan_id, "vgg16").write_bytes(png_bytes(4))
    overlay = check(client.get(explanation, headers=viewer), 200)
    check(client.get(explanation, headers={**viewer, "If-None-Match": overlay.headers["ETag"]}), 304)

    # models and training runs
    check(client.get("/api/v1/models", headers=viewer), 200)
    check(client.post(f"/api/v1/models/{active_version}/activate", headers=reviewer), 200)
    run = check(client.post("/api/v1/training-runs", json={"params": {"epochs": 1, "backbone_weights": "none"}},
                            headers=admin), 202).get_json()
    check(client.get("/api/v1/training-runs", headers=viewer), 200)
    check(client.get(f"/api/v1/training-runs/{run['id']}", headers=viewer), 200)
    assert session.get(TrainingRun, run["id"]) is not None

    # tokens
    token = check(client.post("/api/v1/tokens", json={"name": "robot", "role": "uploader", "expires_in_days": 30},
                              headers=admin), 201).get_json()
    check(client.get("/api/v1/tokens", headers=admin), 200)
    check(client.delete(f"/api/v1/tokens/{token['id']}", headers=admin), 200)

    # the service
    check(client.get("/api/v1/openapi.json", headers=viewer), 200)
    check(client.get("/healthz"), 200)
    check(client.get("/metrics", headers=viewer), 200)

    # ---- error answers, each with the shape the document gives it
    errors = [
        (client.get(f"/api/v1/jobs/{job}"), 401, "unauthorized"),
        (client.get(f"/api/v1/jobs/{job}", headers={"Authorization": "Bearer not-a-token"}), 401, "unauthorized"),
        (client.post("/api/v1/jobs", data=upload_data([("a.png", png_bytes())]), headers=viewer), 403, "forbidden"),
        (client.post("/api/v1/training-runs", json={}, headers=reviewer), 403, "forbidden"),
        (client.get("/api/v1/jobs/424242", headers=viewer), 404, "not_found"),
        (client.get("/api/v1/jobs/424242/files", headers=viewer), 404, "not_found"),
        (client.get("/api/v1/jobs/424242/events", headers=viewer), 404, "not_found"),
        (client.get("/api/v1/scans/424242", headers=viewer), 404, "not_found"),
        # past the database's integer range: no such row, never a database error (found by schemathesis)
        (client.get("/api/v1/jobs/99999999999999999999/files", headers=viewer), 404, "not_found"),
        (client.delete("/api/v1/scans/2147483648/review", headers=reviewer), 404, "not_found"),
        (client.get("/api/v1/results?limit=5&offset=9223372036854775808", headers=viewer), 400, "bad_filter"),
        (client.get("/api/v1/results?page=99999999999999999999", headers=viewer), 400, "bad_filter"),
        (client.delete(f"/api/v1/scans/{scan_id}/review", headers=reviewer), 404, "not_found"),
        (client.get("/api/v1/results?lable=glioma", headers=viewer), 422, "unknown_fields"),
        (client.get(f"/api/v1/jobs/{job}?verbose=1", headers=viewer), 422, "unknown_fields"),
        (client.post("/api/v1/training-runs", json={"epochs": 1}, headers=admin), 422, "unknown_fields"),
        (client.post("/api/v1/training-runs", json={"params": {"epoch": 1}}, headers=admin), 422, "unknown_fields"),
        (client.post("/api/v1/jobs", data={**upload_data([("a.png", png_bytes())]), "path": "x"}, headers=uploader),
         422, "unknown_fields"),
        (client.post(f"/api/v1/scans/{scan_id}/review", json={"label": "not-a-class"}, headers=reviewer),
         422, "bad_review"),
        (client.post("/api/v1/training-runs", json={"params": {"backbone_weights": "/etc/passwd"}}, headers=admin),
         422, "path_not_allowed"),
        (client.get("/api/v1/results?min_confidence=2", headers=viewer), 400, "bad_filter"),
        (client.post("/api/v1/jobs", data={"paths": "a.png"}, content_type="multipart/form-data", headers=uploader),
         400, "no_files"),
        (client.post("/api/v1/tokens", json={"role": "admin"}, headers=admin), 400, "bad_body"),
        (client.post(f"/api/v1/jobs/{job}/close", data="{not json", content_type="application/json",
                     headers=uploader), 400, "bad_body"),
        (client.post(f"/api/v1/jobs/{job}/close", data="x", content_type="text/plain", headers=uploader),
         415, "unsupported_media_type"),
        (client.post("/api/v1/jobs", json={"files": []}, headers=uploader), 415, "unsupported_media_type"),
        (client.post(f"/api/v1/jobs/{job}/files", data=upload_data([("c.png", png_bytes(3))]), headers=uploader),
         409, "job_closed"),
        (client.post(f"/api/v1/jobs/{job}/close", headers=uploader), 409, "job_closed"),
        (client.post("/api/v1/jobs", data=upload_data([("big.dcm", b"\0" * (3 * 1024 * 1024))]),
                     headers=uploader), 413, "payload_too_large"),
        (client.get(f"/api/v1/scans/{scan_id}/explanation?model=ensemble", headers=viewer), 422, "unknown_model"),
    ]
    for response, status, code in errors:
        check(response, status, request_valid=False)
        assert response.get_json()["error"] == code, response.get_json()
    assert "lable" in errors[13][0].get_json()["detail"]

    # a browser session's state-changing request without its CSRF token
    login_page = client.client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login_page).group(1)
    token_value = admin["Authorization"].split()[1]
    assert client.client.post("/login", data={"csrf_token": csrf, "token": token_value}).status_code == 302
    refused = check(client.post("/api/v1/training-runs", json={}), 400, request_valid=False)
    assert refused.get_json()["error"] == "csrf_failed"

    documented = {op["operationId"] for _, _, op in operations(load_document())}
    assert documented - contract.covered == set(), "operations no call above exercised"


def test_answers_with_the_database_down_validate(tmp_path, broker):
    """503 database_unavailable (with Retry-After) from API routes, and the health check's 503."""
    app = build_app(tmp_path, CLOSED_PORT_URL)
    contract = Contract(app)
    try:
        client = app.test_client()
        headers = {"Authorization": "Bearer some-token"}
        for url in ("/api/v1/models", "/api/v1/jobs/1", "/api/v1/jobs/1/files", "/metrics"):
            response = contract.check(client.get(url, headers=headers), 503)
            assert response.get_json()["error"] == "database_unavailable" and response.headers["Retry-After"]
        upload = client.post("/api/v1/jobs", data={"files": [(io.BytesIO(png_bytes()), "a.png")]}, headers=headers)
        assert contract.check(upload, 503).get_json()["error"] == "database_unavailable"
        assert contract.check(client.get("/healthz"), 503).get_json()["status"] == "error"
        assert document_for(app)["paths"]["/healthz"]["get"]["security"] == []
    finally:
        app.extensions["mri"].engine.dispose()
