"""Headless Chromium: log in, upload files through the form, watch the status page finish."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import Prediction, Scan
from browser_helpers import chromium
from web_helpers import png_bytes

pytestmark = pytest.mark.browser
SCREENSHOT = Path("/tmp/mri_web_job_page.png")


@pytest.fixture()
def browser():
    """Headless Chromium via Debian's chromium-driver; skipped when not installed."""
    driver = chromium()
    yield driver
    driver.quit()


def _classify_job(app, job_id: int, bundle: Path) -> None:
    """Run the worker's own classification function (in-process) on the job's queued scans."""
    from tasks.classify import classify_scans
    from tasks.versions import activate_version, register_bundle

    state = app.extensions["mri"]
    with state.session_factory() as s:
        version = activate_version(s, register_bundle(s, bundle))
        scan_ids = list(s.execute(select(Scan.id).where(Scan.job_id == job_id)).scalars())
        s.commit()
        version_id = version.id
    classify_scans(state.session_factory, state.settings, scan_ids, version_id)


def test_login_upload_and_status_page(app, live_server, browser, tmp_path, tiny_bundle):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from web.auth import get_or_create_user, set_password

    with app.extensions["mri"].session_factory() as s:
        set_password(get_or_create_user(s, "radiologist", "uploader"), "a long password")
        s.commit()
    folder = tmp_path / "pick"
    folder.mkdir()
    for i in range(3):
        (folder / f"slice{i}.png").write_bytes(png_bytes(i))
    (folder / "notes.txt").write_text("not a scan")
    wait = WebDriverWait(browser, 20)

    browser.get(live_server + "/")
    wait.until(ec.presence_of_element_located((By.ID, "login")))
    browser.find_element(By.ID, "name").send_keys("radiologist")
    browser.find_element(By.ID, "password").send_keys("a long password")
    browser.find_element(By.ID, "login").click()
    wait.until(ec.presence_of_element_located((By.ID, "upload-form")))

    browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in sorted(folder.iterdir())))
    browser.find_element(By.ID, "upload-button").click()
    wait.until(ec.url_contains("/jobs/"))
    job_id = int(browser.current_url.rstrip("/").rsplit("/", 1)[-1])
    wait.until(ec.text_to_be_present_in_element((By.ID, "job-counts"), "of 4"))
    # The page watches the job's event stream rather than polling it.
    wait.until(lambda b: b.find_element(By.ID, "job").get_attribute("data-watching") is not None)
    assert browser.find_element(By.ID, "job").get_attribute("data-watching") == "stream"
    with app.extensions["mri"].session_factory() as s:
        assert sorted(s.execute(select(Scan.path).where(Scan.job_id == job_id)).scalars()) == [
            "notes.txt", "slice0.png", "slice1.png", "slice2.png"]

    _classify_job(app, job_id, tiny_bundle)
    wait.until(ec.text_to_be_present_in_element((By.ID, "job-status"), "done"))
    wait.until(ec.text_to_be_present_in_element((By.ID, "scans"), "slice0.png"))
    with app.extensions["mri"].session_factory() as s:
        stored = s.execute(select(Prediction).join(Scan).where(
            Scan.job_id == job_id, Scan.path == "slice0.png", Prediction.model_name == "ensemble")).scalar_one()
        failed = s.execute(select(Scan).where(Scan.job_id == job_id, Scan.path == "notes.txt")).scalar_one()
    wait.until(ec.text_to_be_present_in_element((By.ID, "scans"), failed.error))
    table = browser.find_element(By.ID, "scans").text
    assert failed.status == "failed" and failed.error
    assert stored.label in table and f"{stored.agreement}/5" in table
    assert browser.find_element(By.ID, "job-counts").text.startswith("3 classified, 1 failed of 4")
    browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


def test_the_status_page_polls_when_the_stream_is_refused(app, live_server, browser):
    """With no stream to spare (503 too_many_streams) the page polls the status and still follows the job."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from db.models import Job
    from web.auth import get_or_create_user, set_password

    app.extensions["mri"].job_watch.max_streams = 0
    with app.extensions["mri"].session_factory() as s:
        user = get_or_create_user(s, "radiologist", "uploader")
        set_password(user, "a long password")
        job = Job(name="polled", sealed=True, status="queued", total=1, user_id=user.id)
        s.add(job)
        s.flush()
        s.add(Scan(job_id=job.id, sha256="d" * 64, path="a.png", study="", status="queued"))
        s.commit()
        job_id = job.id
    wait = WebDriverWait(browser, 20)
    browser.get(live_server + "/login")
    browser.find_element(By.ID, "name").send_keys("radiologist")
    browser.find_element(By.ID, "password").send_keys("a long password")
    browser.find_element(By.ID, "login").click()
    wait.until(ec.presence_of_element_located((By.ID, "upload-form")))  # logged in, before going on
    browser.get(f"{live_server}/jobs/{job_id}")
    wait.until(lambda b: b.find_element(By.ID, "job").get_attribute("data-watching") == "poll")
    with app.extensions["mri"].session_factory() as s:
        scan = s.execute(select(Scan).where(Scan.job_id == job_id)).scalar_one()
        scan.status, scan.error = "failed", "cannot be read"
        job = s.get(Job, job_id)
        job.status, job.failed = "done", 1
        s.commit()
    wait.until(ec.text_to_be_present_in_element((By.ID, "job-status"), "done"))
    assert browser.find_element(By.ID, "job-counts").text.startswith("0 classified, 1 failed of 1")
