"""Headless Chromium on the upload, job and results pages at 1280 and 390 px: a study folder of 236
scans dropped onto the upload page (more than one readEntries batch), sent in parts with one part
retried and a broken zip refused, then the job page followed to the end with its study summary and a
sorted scan table; the results page filtered, sorted and exported as CSV and JSON. Screenshots of
every page at both widths go to $TEST_SCREENSHOT_DIR (default /tmp/mri_web_screenshots).

Selenium cannot drag folders from the desktop, so the drop is a real `drop` event on the page whose
dataTransfer hands out directory entries built in the page (the FileSystemEntry API's shape: a
reader that gives at most 100 entries per readEntries call, as Chromium's does).
"""
from __future__ import annotations

import base64
import csv
import io
import json
import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from db.models import Job, Prediction, Scan
from tasks.jobs import refresh_job
from test_browser_pages import _login, _shoot, _wait, browser  # noqa: F401  (fixture)
from web_helpers import png_bytes, upload_data

pytestmark = pytest.mark.browser
CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
MODELS = ["resnet50", "vgg16", "custom_cnn", "svm", "random_forest"]

# Builds FileSystemEntry-like objects from [path, base64] pairs and drops them on the drop zone.
DROP_SCRIPT = """
const files = arguments[0];
window.readCalls = 0;
const root = {children: new Map()};
for (const [path, b64] of files) {
  const parts = path.split("/");
  let node = root;
  for (const dir of parts.slice(0, -1)) {
    if (!node.children.has(dir)) node.children.set(dir, {children: new Map()});
    node = node.children.get(dir);
  }
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  node.children.set(parts[parts.length - 1], new File([bytes], parts[parts.length - 1]));
}
function entry(name, value, parent) {
  const fullPath = parent + "/" + name;
  if (value instanceof File) {
    return {isFile: true, isDirectory: false, name: name, fullPath: fullPath,
            file: (ok) => setTimeout(() => ok(value), 0)};
  }
  const children = [...value.children.entries()].map(([n, v]) => entry(n, v, fullPath));
  return {isFile: false, isDirectory: true, name: name, fullPath: fullPath,
          createReader: () => { let next = 0; return {readEntries: (ok) => {
            window.readCalls += 1;
            const batch = children.slice(next, next + 100);  // Chromium's batch size
            next += batch.length;
            setTimeout(() => ok(batch), 0);
          }}; }};
}
const items = [...root.children.entries()].map(([n, v]) => {
  const e = entry(n, v, "");
  return {kind: "file", webkitGetAsEntry: () => e, getAsFile: () => null};
});
const drop = new Event("drop", {bubbles: true, cancelable: true});
Object.defineProperty(drop, "dataTransfer", {value: {items: items, files: [], dropEffect: "none"}});
document.getElementById("drop-zone").dispatchEvent(drop);
"""


class FailOnce:
    """WSGI middleware: the first POST that adds files to a job is answered 503 (a busy service)."""

    def __init__(self, app) -> None:
        self.app, self.failed = app, 0
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] == "POST" and environ["PATH_INFO"].endswith("/files"):
            with self.lock:
                fail, self.failed = self.failed == 0, self.failed + 1
            if fail:
                environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
                start_response("503 SERVICE UNAVAILABLE", [("Content-Type", "application/json"), ("Retry-After", "0")])
                return [b'{"error": "unavailable", "detail": "busy"}']
        return self.app(environ, start_response)


@pytest.fixture()
def flaky_server(app):
    """The app served on a free port behind FailOnce; yields (url, middleware)."""
    from werkzeug.serving import make_server

    flaky = FailOnce(app.wsgi_app)
    app.wsgi_app = flaky
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", flaky
    server.shutdown()
    thread.join(timeout=5)


def _store(session, scan: Scan, version: int, ensemble: str, agreement: int, confidence: float,
           when: datetime | None = None) -> None:
    """What a worker writes for a classified scan: five labels and the ensemble with its agreement."""
    others = [c for c in CLASSES if c != ensemble]
    labels = [ensemble] * agreement + others[: 5 - agreement] + [others[0]] * max(0, 5 - agreement - 3)
    scan.status, scan.model_version_id = "classified", version
    scan.classified_at = when or datetime.now(timezone.utc)
    for name, label in zip(MODELS, labels):
        session.add(Prediction(scan_id=scan.id, model_version_id=version, model_name=name, label=label,
                               confidence=0.7, probabilities={c: 0.7 if c == label else 0.1 for c in CLASSES}))
    session.add(Prediction(scan_id=scan.id, model_version_id=version, model_name="ensemble", label=ensemble,
                           confidence=confidence, agreement=agreement,
                           probabilities={c: confidence if c == ensemble else (1 - confidence) / 3 for c in CLASSES}))


def _finish(session, job_id: int, scans: list[Scan], version: int) -> None:
    """Classify `scans` as the worker would (a text file fails with the decoder's kind of reason)."""
    for index, scan in enumerate(scans):
        if scan.path.endswith(".txt"):
            scan.status, scan.error = "failed", "cannot decode notes.txt: not an image (JPEG, PNG, BMP, TIFF or DICOM)"
            continue
        label = "pituitary" if scan.study == "patient-9" else CLASSES[(scan.id % 7) % 3]
        _store(session, scan, version, label, 3 if scan.id % 9 == 0 else 5, 0.5 + (scan.id % 50) / 100)
    refresh_job(session, job_id)
    session.commit()


def _table(browser) -> list[dict]:
    return browser.execute_script(
        "return [...document.querySelectorAll('#scans tbody tr[data-scan]')].map(tr => ({"
        "id: Number(tr.dataset.scan), confidence: tr.querySelector('.col-confidence').textContent, "
        "path: tr.querySelector('.col-path').textContent}))")


def test_drop_a_study_folder_send_it_in_parts_and_follow_the_job(app, flaky_server, browser, session,
                                                                 active_version):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec

    base, flaky = flaky_server
    files = [(f"patient-7/slice-{i:03d}.png", png_bytes(i, size=16)) for i in range(230)]
    files += [(f"patient-9/series-1/im-{i}.png", png_bytes(1000 + i, size=16)) for i in range(5)]
    files += [("patient-7/notes.txt", b"not a scan"), ("patient-7/broken.zip", b"PK\x03\x04 not really a zip"),
              ("patient-7/.DS_Store", b"\0\0\0\1Bud1")]
    _login(app, browser, base, "/", "uploader")
    browser.execute_script(DROP_SCRIPT, [[p, base64.b64encode(b).decode()] for p, b in files])
    summary = browser.find_element(By.ID, "selection-summary")
    _wait(browser).until(lambda b: summary.text.startswith("237 files"))
    assert "in 2 study folders; 1 system file(s) left out" in summary.text
    assert browser.execute_script("return window.readCalls") >= 5  # 232 entries: 100 + 100 + 32 + end, and more
    _shoot(browser, "upload", "desktop")
    _shoot(browser, "upload", "phone")

    browser.find_element(By.ID, "upload-button").click()
    _wait(browser, 20).until(ec.url_contains("/jobs/"))
    job_id = int(browser.current_url.rstrip("/").rsplit("/", 1)[-1])
    # 237 files in parts of 50: one part was answered 503 and sent again; the zip was refused on its own
    assert flaky.failed >= 5
    refused = _wait(browser).until(ec.visibility_of_element_located((By.ID, "upload-refused")))
    assert "patient-7/broken.zip" in refused.text and "cannot be read" in refused.text
    scans = session.scalars(select(Scan).where(Scan.job_id == job_id).order_by(Scan.id)).all()
    assert len(scans) == 236 and {s.study for s in scans} == {"patient-7", "patient-9"}
    assert session.get(Job, job_id).sealed
    _wait(browser).until(ec.text_to_be_present_in_element((By.ID, "job-counts"), "0 classified, 0 failed of 236"))

    # the worker gets through the first half: the page follows, with a rate and the time left
    _finish(session, job_id, scans[:118], active_version)
    _wait(browser).until(lambda b: "118 classified, 0 failed of 236" in b.find_element(By.ID, "job-counts").text)
    _wait(browser).until(lambda b: "left" in b.find_element(By.ID, "job-rate").text
                         or "to go" in b.find_element(By.ID, "job-rate").text)
    _finish(session, job_id, scans[118:], active_version)
    _wait(browser, 15).until(ec.text_to_be_present_in_element((By.ID, "job-status"), "done"))
    _wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, '#studies[data-status="done"]')))
    cards = browser.execute_script("return Object.fromEntries([...document.querySelectorAll('#studies li.study')]"
                                   ".map(li => [li.dataset.study, li.innerText]))")
    assert len(cards) == 2
    disagree = sum(1 for s in scans if s.status == "classified" and s.study == "patient-7" and s.id % 9 == 0)
    assert "231 scans" in cards["patient-7"] and f"Models disagree on {disagree} scans" in cards["patient-7"]
    assert "1 failed" in cards["patient-7"] and "pituitary 5" in cards["patient-9"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#studies svg.mix rect")) >= 4  # the class mix bars
    assert "not an image" in browser.find_element(By.ID, "failures").text
    _shoot(browser, "job", "desktop")
    _shoot(browser, "job", "phone")

    # sort by confidence (highest first), then the other way; then only the disagreements of a study
    browser.find_element(By.CSS_SELECTOR, 'button.sort[data-key="confidence"]').click()
    rows = _table(browser)
    assert len(rows) == 200 and browser.find_element(By.ID, "more-scans").is_displayed()  # 200 at a time
    figures = [float(r["confidence"].rstrip("%")) for r in rows if r["confidence"]]
    assert figures == sorted(figures, reverse=True) and figures[0] == 99.0
    header = browser.find_element(By.CSS_SELECTOR, 'button.sort[data-key="confidence"]').find_element(By.XPATH, "..")
    assert header.get_attribute("aria-sort") == "descending"
    browser.find_element(By.CSS_SELECTOR, 'button.sort[data-key="confidence"]').click()
    figures = [float(r["confidence"].rstrip("%")) for r in _table(browser) if r["confidence"]]
    assert figures == sorted(figures) and header.get_attribute("aria-sort") == "ascending"
    # the sort buttons are real buttons: the keyboard reaches them and Enter sorts
    agree = browser.find_element(By.CSS_SELECTOR, 'button.sort[data-key="agreement"]')
    browser.execute_script("arguments[0].focus()", agree)
    agree.send_keys(Keys.ENTER)
    assert agree.find_element(By.XPATH, "..").get_attribute("aria-sort") == "descending"
    assert agree.value_of_css_property("outline-style") == "solid"  # the focus shows
    browser.find_element(By.CSS_SELECTOR, '#studies li[data-study="patient-7"] button.disagree').click()
    shown = _table(browser)
    assert len(shown) == disagree and all(r["id"] % 9 == 0 for r in shown)
    # every picture in the table is a thumbnail that loaded
    _wait(browser).until(lambda b: b.execute_script(
        "return [...document.querySelectorAll('#scans img.thumb')].every(i => i.complete && i.naturalWidth === 16)"))
    browser.find_element(By.CSS_SELECTOR, f'#scans tr[data-scan="{shown[0]["id"]}"] .col-path a').click()
    _wait(browser).until(ec.url_contains(f"/scans/{shown[0]['id']}"))
    assert "3 of 5 models agree" in browser.find_element(By.ID, "agreement").text


def test_results_page_filters_sorts_and_exports_what_is_filtered(app, live_server, browser, session, auth,
                                                                 active_version):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select

    files = [(f"study-{i % 3}/slice-{i:02d}.png", png_bytes(i, size=16)) for i in range(60)]
    client = app.test_client()  # two parts: the test settings allow 40 scans per request
    job = client.post("/api/v1/jobs?open=1", data=upload_data(files[:30]), headers=auth("uploader")).get_json()["id"]
    client.post(f"/api/v1/jobs/{job}/files", data=upload_data(files[30:]), headers=auth("uploader"))
    client.post(f"/api/v1/jobs/{job}/close", headers=auth("uploader"))
    now = datetime.now(timezone.utc)
    for i, scan in enumerate(session.scalars(select(Scan).where(Scan.job_id == job).order_by(Scan.id))):
        _store(session, scan, active_version, CLASSES[i % 4], 5 - i % 3, 0.4 + (i * 7 % 60) / 100,
               when=now - timedelta(minutes=(59 - i) * 3))
    refresh_job(session, job)
    session.commit()

    _login(app, browser, live_server, "/results", "viewer")
    assert "60 result(s)" in browser.find_element(By.ID, "result-count").text
    first_time = browser.find_element(By.CSS_SELECTOR, "#results time")
    assert first_time.text == "just now" and "UTC" in first_time.get_attribute("title")
    _wait(browser).until(lambda b: b.execute_script(
        "return [...document.querySelectorAll('#results img.thumb')].slice(0, 8).every(i => i.complete && i.naturalWidth === 16)"))
    _shoot(browser, "results", "desktop")

    Select(browser.find_element(By.ID, "f-label")).select_by_value("glioma")
    Select(browser.find_element(By.ID, "f-max-agreement")).select_by_value("4")
    browser.find_element(By.ID, "f-min-confidence").send_keys("0.5")
    browser.find_element(By.ID, "apply-filters").click()
    expected = [i for i in range(60) if i % 4 == 0 and 5 - i % 3 <= 4 and 0.4 + (i * 7 % 60) / 100 >= 0.5]
    _wait(browser).until(lambda b: f"{len(expected)} result(s)" in b.find_element(By.ID, "result-count").text)
    browser.find_element(By.CSS_SELECTOR, 'th.col-confidence a').click()  # highest first
    _wait(browser).until(ec.url_contains("sort=-confidence"))
    shown = [float(td.text) for td in browser.find_elements(By.CSS_SELECTOR, "#results td.col-confidence")]
    assert shown == sorted(shown, reverse=True) and len(shown) == len(expected)
    _shoot(browser, "results-filtered", "phone")

    # the exports hold exactly the filtered rows, in the same order
    fetch = ("const done = arguments[arguments.length - 1];"
             "fetch(document.getElementById(arguments[0]).href, {credentials: 'same-origin'})"
             ".then(r => r.text()).then(done)")
    rows = list(csv.DictReader(io.StringIO(browser.execute_async_script(fetch, "csv-link"))))
    exported = json.loads(browser.execute_async_script(fetch, "json-link"))
    assert [float(r["confidence"]) for r in rows] == shown and exported["total"] == len(expected)
    assert [r["scan_id"] for r in exported["results"]] == [int(r["scan_id"]) for r in rows]
    assert {r["label"] for r in rows} == {"glioma"} and all(int(r["agreement"]) <= 4 for r in rows)
    assert browser.find_element(By.ID, "csv-link").get_attribute("download") is not None

    # pages, and the keyboard: the sort links and the pager are links a Tab reaches
    browser.find_element(By.ID, "clear-filters").click()
    _wait(browser).until(lambda b: "60 result(s)" in b.find_element(By.ID, "result-count").text)
    browser.get(live_server + "/results?per_page=25")
    assert "page 1 of 3" in browser.find_element(By.ID, "result-count").text
    browser.find_element(By.CSS_SELECTOR, '.pager a[rel="next"]').click()
    _wait(browser).until(lambda b: "page 2 of 3" in b.find_element(By.ID, "result-count").text)
