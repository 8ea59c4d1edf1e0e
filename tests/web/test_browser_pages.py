"""Headless Chromium on the scan, models and training-runs pages at 1280 px and at a 390 px phone width:
the review on the scan page, activate and roll back on the models page, live progress and queueing a
run; no CSP violation, no sideways scrolling of the page; a screenshot of each page at each width.

Screenshots go to $TEST_SCREENSHOT_DIR (default /tmp/mri_web_screenshots), named page-width.png.
"""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from db.models import ModelVersion, Prediction, Scan, TrainingRun
from tests.helpers.bad_inputs import dicom_bytes
from browser_helpers import blocked_content, chromium
from web_helpers import png_bytes, upload_data

pytestmark = pytest.mark.browser
SCREENSHOTS = Path(os.environ.get("TEST_SCREENSHOT_DIR", "/tmp/mri_web_screenshots"))
CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
MODELS = ["resnet50", "vgg16", "custom_cnn", "svm", "random_forest"]
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
PASSWORD = "a long password"


@pytest.fixture()
def browser():
    """Headless Chromium keeping the console log (CSP violations are reported there)."""
    driver = chromium(keep_console=True, hide_scrollbars=True)
    yield driver
    blocked = blocked_content(driver)
    driver.quit()
    assert blocked == []


def _wait(browser, seconds: float = 10):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # the pages reload themselves after a change, so an element may go stale while it is read
    return WebDriverWait(browser, seconds,
                         ignored_exceptions=(StaleElementReferenceException, NoSuchElementException))


def _new_document_loaded(browser) -> bool:
    """Whether the document marked by `_mark_document` has been replaced by a fully loaded one."""
    from selenium.common.exceptions import WebDriverException

    try:
        return browser.execute_script("return window.__markedDocument !== true && document.readyState === 'complete'")
    except WebDriverException:
        # Mid-navigation Chromium may answer with an inspector error instead of a result: not loaded yet
        return False


def _mark_document(browser) -> None:
    """Mark the current document so that `_new_document_loaded` can tell when it has gone."""
    # A JavaScript mark rather than selenium's staleness_of: that asks about an element of the
    # old document and Chromium can answer "Node with given id does not belong to the document",
    # a WebDriverException that is neither stale nor missing, while the page is being replaced.
    browser.execute_script("window.__markedDocument = true")


def _reloaded(browser, action) -> None:
    """Run `action` (which makes the page reload itself), then wait until the new page has loaded."""
    _mark_document(browser)
    action()
    _wait(browser).until(_new_document_loaded)


def _login(app, browser, base: str, path: str, role: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    from web.auth import get_or_create_user, set_password

    with app.extensions["mri"].session_factory() as s:
        set_password(get_or_create_user(s, f"{role}-person", role), PASSWORD)
        s.commit()
    browser.get(base + path)
    _wait(browser).until(ec.presence_of_element_located((By.ID, "login")))
    browser.find_element(By.ID, "name").send_keys(f"{role}-person")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    _mark_document(browser)
    browser.find_element(By.ID, "login").click()
    # The login page's own URL (/login?next=/results) already contains `path`: wait for the form
    # to go and the page asked for to load instead.
    _wait(browser).until(lambda b: _new_document_loaded(b) and "/login" not in b.current_url and path in b.current_url)


def _shoot(browser, name: str, width: str) -> Path:
    """Resize to `width`, check the page does not scroll sideways, save a full-page screenshot."""
    size = WIDTHS[width]
    browser.set_window_size(*size)
    inner = browser.execute_script("return window.innerWidth")
    overflow = browser.execute_script("return document.documentElement.scrollWidth")
    wide = browser.execute_script(
        "return Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right > "
        "window.innerWidth + 1 || e.scrollWidth > window.innerWidth).slice(0, 8).map(e => e.tagName + '#' + e.id + '.' + e.className + ':' + e.scrollWidth + '/' + Math.round(e.getBoundingClientRect().right))")
    assert overflow <= inner, f"{name} scrolls sideways at {inner} px ({overflow} px wide): {wide}"
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(size[0], min(max(height + 120, size[1]), 4000))
    browser.execute_script("window.scrollTo(0, 0)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}-{width}.png"
    browser.save_screenshot(str(path))
    browser.set_window_size(*size)
    print(f"screenshot: {path}")
    assert path.stat().st_size > 5_000
    return path


def _phantom(size: int = 128) -> np.ndarray:
    """A 12-bit MR-like slice: a bright ring (skull), a grey disc (brain) and a brighter blob (lesion)."""
    y, x = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    r = np.hypot(x / 0.8, y)
    image = np.where(r < 0.9, 900 + 300 * np.cos(6 * x) * np.sin(5 * y), 0)
    image = np.where((r > 0.82) & (r < 0.9), 2600, image)
    image = np.where(np.hypot(x - 0.25, y + 0.2) < 0.15, 2000, image)
    return image.clip(0, 4095).astype(np.uint16)


def _version(session, digest: str, status: str, accuracy: float, diagonal: int, **manifest) -> int:
    matrix = [[diagonal if i == j else (10 - diagonal if j == (i + 1) % 4 else 0) for j in range(4)] for i in range(4)]
    version = ModelVersion(
        digest=digest * 64, bundle_path=f"/b/{digest}", backbone_weights="none", status=status,
        activated=datetime(2026, 11, 28, 10, 0) if status != "candidate" else None,
        manifest={"classes": CLASSES, "image_size": 64, "dataset": {"train": 4482, "validation": 498}, **manifest},
        metrics={"ensemble": {"accuracy": accuracy}},
        evaluation={"size": 40, "accuracy": accuracy, "macro_f1": accuracy - 0.01, "confusion_matrix": matrix,
                    "per_class": {c: {"precision": accuracy, "recall": accuracy, "f1": accuracy - 0.01,
                                      "support": 10} for c in CLASSES},
                    "per_model": {m: {"accuracy": accuracy - 0.05, "macro_f1": accuracy - 0.06} for m in MODELS},
                    "run": 1, "at": "2026-11-29T08:00:00+00:00"})
    session.add(version)
    session.commit()
    return version.id


def test_scan_page_window_zoom_and_review(app, live_server, browser, auth, session):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select

    version = _version(session, "a", "active", 0.9, 9)
    files = [("patient-7/slice-00.png", png_bytes(0, size=64)),
             ("patient-7/slice-01.dcm", dicom_bytes(_phantom(), WindowCenter=1200, WindowWidth=1600)),
             ("patient-7/slice-02.png", png_bytes(2, size=64))]
    job = app.test_client().post("/api/v1/jobs", headers=auth("uploader"), data=upload_data(files)).get_json()["id"]
    ids = list(session.scalars(select(Scan.id).where(Scan.job_id == job).order_by(Scan.id)))
    scan = session.get(Scan, ids[1])
    scan.status, scan.model_version_id = "classified", version
    for name, label in zip(MODELS, ["glioma", "glioma", "meningioma", "glioma", "glioma"]):
        session.add(Prediction(scan_id=scan.id, model_version_id=version, model_name=name, label=label,
                               confidence=0.7, probabilities={c: 0.7 if c == label else 0.1 for c in CLASSES}))
    session.add(Prediction(scan_id=scan.id, model_version_id=version, model_name="ensemble", label="glioma",
                           confidence=0.66, agreement=4,
                           probabilities={"glioma": 0.66, "meningioma": 0.18, "notumor": 0.1, "pituitary": 0.06}))
    session.commit()

    _login(app, browser, live_server, f"/scans/{scan.id}", "reviewer")
    image = browser.find_element(By.ID, "scan-image")
    _wait(browser).until(lambda b: b.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image))
    assert "4 of 5 models agree" in browser.find_element(By.ID, "agreement").text
    # window/level from the keyboard: the picture is fetched again in the chosen window
    level = browser.find_element(By.ID, "window-level")
    assert "file's own values" in browser.find_element(By.ID, "image-controls").text
    level.send_keys(Keys.ARROW_LEFT * 20)  # in the DICOM's own values, from its window centre 1200
    _wait(browser).until(lambda b: image.get_attribute("src").endswith("?center=1180&width=1600"))
    _wait(browser).until(lambda b: b.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image))
    browser.find_element(By.ID, "zoom-in").click()
    assert browser.find_element(By.ID, "zoom-value").text.endswith("%")
    browser.find_element(By.ID, "zoom-fit").click()
    _shoot(browser, "scan", "desktop")

    # the keyboard alone reaches every control, in reading order, and shows where it is
    browser.refresh()
    reached, ring = [], {}
    for _ in range(40):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        focused = browser.switch_to.active_element
        reached.append(focused.get_attribute("id"))
        ring[reached[-1]] = focused.value_of_css_property("outline-style")
        if reached[-1] == "review-submit":
            break
    order = ["previous-scan", "next-scan", "image-box", "window-level", "window-width", "window-reset",
             "zoom-out", "zoom-fit", "zoom-actual", "zoom-in", "review-label", "review-note", "review-submit"]
    assert [i for i in reached if i in order] == order, reached
    assert {ring[i] for i in order} == {"solid"}

    Select(browser.find_element(By.ID, "review-label")).select_by_value("meningioma")
    browser.find_element(By.ID, "review-note").send_keys("dural tail", Keys.TAB)  # on to "Save review"
    _reloaded(browser, lambda: browser.switch_to.active_element.send_keys(Keys.ENTER))
    _wait(browser).until(ec.text_to_be_present_in_element((By.ID, "current-review"), "meningioma"))
    assert "reviewer-person" in browser.find_element(By.ID, "current-review").text
    session.expire_all()
    assert "meningioma" in app.test_client().get(f"/api/v1/scans/{scan.id}", headers=auth("viewer")).get_data(as_text=True)
    _shoot(browser, "scan-reviewed", "phone")
    # the explanation model picker stays wide enough to read "random_forest: glioma" on a phone
    picker = browser.find_element(By.ID, "explanation-model")
    assert picker.size["width"] >= 200, picker.size
    _reloaded(browser, browser.find_element(By.ID, "review-withdraw").click)
    _wait(browser).until(ec.text_to_be_present_in_element((By.ID, "current-review"), "Not reviewed yet"))
    browser.find_element(By.ID, "next-scan").click()
    _wait(browser).until(ec.url_contains(f"/scans/{ids[2]}"))


def test_models_page_activate_then_roll_back(app, live_server, browser, session):  # noqa: F811
    from selenium.webdriver.common.by import By

    old = _version(session, "1", "retired", 0.82, 8, profile="quick", notes="quick first model (64 px)")
    current = _version(session, "2", "active", 0.86, 9)
    new = _version(session, "3", "candidate", 0.9, 9, calibration={
        "temperatures": {m: 0.5 + i / 4 for i, m in enumerate(MODELS)}, "ensemble": {"temperature": 0.98}},
        triage={"target_accuracy": 0.995, "confidence_threshold": 0.9929, "min_agreement": 3, "target_reached": True,
                "validation": {"coverage": 0.549, "accepted_accuracy": 0.996}})
    _login(app, browser, live_server, "/models", "reviewer")
    _shoot(browser, "models", "desktop")
    _shoot(browser, "models", "phone")
    assert "quick first model" in browser.find_element(By.ID, f"version-{old}").text
    assert "review when below 0.993" in browser.find_element(By.ID, f"version-{new}").text

    def click_and_confirm(version: int) -> None:
        button = browser.find_element(By.CSS_SELECTOR, f'#version-{version} button.activate')

        def activate() -> None:
            button.click()
            _wait(browser).until(lambda b: b.switch_to.alert).accept()

        _reloaded(browser, activate)
        _wait(browser).until(lambda b: "is-active" in b.find_element(By.ID, f"version-{version}").get_attribute("class"))

    click_and_confirm(new)
    statuses = {v.id: v.status for v in session.scalars(select(ModelVersion).execution_options(populate_existing=True))}
    assert statuses == {old: "retired", current: "retired", new: "active"}
    assert browser.find_element(By.CSS_SELECTOR, f"#version-{current} button.activate").text == f"Roll back to #{current}"
    click_and_confirm(current)
    session.expire_all()
    assert session.get(ModelVersion, current).status == "active" and session.get(ModelVersion, new).status == "retired"
    assert "by reviewer-person" in browser.find_element(By.ID, f"version-{current}").text


def test_training_runs_page_follows_a_run_and_queues_one(app, live_server, browser, session, broker):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    run = TrainingRun(status="running", stage="features", progress=0.2, log="08:00:01 [features] resnet50 10/100")
    done = TrainingRun(status="succeeded", stage="done", progress=1.0, model_version_id=None,
                       data_summary={"folder_files": 5471, "reviewed_scans": 50, "overrides": 6, "train_pool": 4980,
                                     "evaluation": 541},
                       decision={"promoted": False, "evaluation_size": 541, "tolerance": 0.005,
                                 "reason": "kept active version 1: candidate's ensemble accuracy 0.8800 is 0.0200 "
                                           "below 0.9000 (on 541 evaluation scans, tolerance 0.005)",
                                 "candidate": {"version": 2, "accuracy": 0.88, "macro_f1": 0.87},
                                 "active": {"version": 1, "accuracy": 0.90, "macro_f1": 0.89}})
    # a failed run's error: one long word of URLs and paths must wrap, not widen the page on a phone
    failed = TrainingRun(status="failed", stage="features", progress=0.3, params={"backbone_weights": "/srv/w/" + "x" * 80},
                         error="OSError: cannot read https://storage.example.org/keras-applications/resnet50_weights"
                               "_tf_dim_ordering_tf_kernels_notop.h5 into /home/worker/.keras/models/"
                               "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5.partial")
    session.add_all([run, done, failed])
    session.commit()
    _login(app, browser, live_server, "/training-runs", "admin")
    card = f"run-{run.id}"
    assert "20%" in browser.find_element(By.ID, card).text

    # the worker moves on: the page shows it without a reload
    run.stage, run.progress = "heads", 0.6
    run.log += "\n08:01:00 [heads] svm fitted on 4980 scans"
    session.commit()
    _wait(browser).until(ec.text_to_be_present_in_element((By.ID, card), "svm fitted on 4980 scans"))
    assert "60%" in browser.find_element(By.ID, card).text and "heads" in browser.find_element(By.ID, card).text
    _shoot(browser, "training-runs", "desktop")
    _shoot(browser, "training-runs", "phone")

    browser.find_element(By.CSS_SELECTOR, '#queue-form input[name="epochs"]').send_keys("3")
    _reloaded(browser, browser.find_element(By.ID, "queue-button").click)
    _wait(browser).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, 'article[data-status="queued"]')) == 1)
    queued = session.scalars(select(TrainingRun).where(TrainingRun.status == "queued")).one()
    assert queued.params == {"epochs": 3} and queued.trigger == "manual"

    # the running run finishes: the page reloads and shows the gate's decision
    run.status, run.stage, run.progress = "succeeded", "done", 1.0
    run.decision = dict(done.decision, promoted=True, reason="promoted over version 1")
    session.commit()
    _wait(browser, 20).until(lambda b: "promoted over version 1" in b.find_element(By.ID, card).text)


def test_a_job_waiting_for_the_first_model_points_at_the_training_run(app, live_server, browser, auth, session):  # noqa: F811
    from selenium.webdriver.common.by import By

    job = app.test_client().post("/api/v1/jobs", headers=auth("uploader"),
                                 data=upload_data([("s/0.png", png_bytes(0, size=64))])).get_json()["id"]
    run = TrainingRun(status="running", stage="heads", progress=0.41)
    session.add(run)
    session.commit()
    _login(app, browser, live_server, f"/jobs/{job}", "viewer")
    # the page's script has polled the status API once (it writes the rate line and the detail)
    _wait(browser).until(lambda b: b.execute_script(
        "return performance.getEntriesByType('resource').some(e => e.name.includes('/api/v1/jobs/'))"))
    _wait(browser).until(lambda b: b.find_element(By.ID, "job-counts").text)
    detail = browser.find_element(By.ID, "job-detail").text
    assert detail.startswith(f"Waiting for the first model: training run #{run.id} is running (41%)"), detail
    assert "Waiting for a worker" not in browser.find_element(By.ID, "job").text
    link = browser.find_element(By.CSS_SELECTOR, "#job-training-link a")
    assert link.is_displayed() and link.get_attribute("href").endswith("/training-runs")
    _shoot(browser, "job-waiting", "desktop")
    _shoot(browser, "job-waiting", "phone")
    browser.get(live_server + "/models")
    assert f"training run #{run.id} is running (41%)" in browser.find_element(By.ID, "waiting-for-model").text
    _shoot(browser, "models-waiting", "phone")
