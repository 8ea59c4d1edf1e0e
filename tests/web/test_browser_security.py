"""Headless Chromium under the Content-Security-Policy: the models page's script activates a version
(CSRF header), the logout form posts its CSRF field, and the browser reports no blocked content."""
from __future__ import annotations

from pathlib import Path

import pytest

from db.models import ModelVersion
from browser_helpers import blocked_content, chromium

pytestmark = pytest.mark.browser
SCREENSHOT = Path("/tmp/mri_web_models_page.png")


@pytest.fixture()
def browser():
    """Headless Chromium that keeps the console log (CSP violations are reported there)."""
    driver = chromium(keep_console=True)
    yield driver
    driver.quit()


def test_models_page_activates_and_logout_works_under_the_csp(app, live_server, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from web.auth import get_or_create_user, set_password

    with app.extensions["mri"].session_factory() as s:
        set_password(get_or_create_user(s, "lead", "reviewer"), "a long password")
        s.add(ModelVersion(digest="c" * 64, bundle_path="/nonexistent", manifest={"classes": ["glioma"]},
                           backbone_weights="none", status="candidate"))
        s.commit()
    wait = WebDriverWait(browser, 20)
    browser.get(live_server + "/models")
    wait.until(ec.presence_of_element_located((By.ID, "login")))
    browser.find_element(By.ID, "name").send_keys("lead")
    browser.find_element(By.ID, "password").send_keys("a long password")
    browser.find_element(By.ID, "login").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "button.activate")))

    browser.find_element(By.CSS_SELECTOR, "button.activate").click()  # static/models.js, X-CSRFToken
    wait.until(ec.alert_is_present()).accept()  # "Really activate version #1?"
    wait.until(ec.invisibility_of_element_located((By.CSS_SELECTOR, "button.activate")))
    assert "active" in browser.find_element(By.CSS_SELECTOR, "span.status").text
    with app.extensions["mri"].session_factory() as s:
        assert s.query(ModelVersion).one().status == "active"
    browser.save_screenshot(str(SCREENSHOT))
    policy = browser.execute_async_script(
        "const done = arguments[0];"
        "fetch('/models').then(r => done(r.headers.get('content-security-policy')));")
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy  # the page ran under it

    browser.find_element(By.CSS_SELECTOR, "form.logout button").click()  # the form's csrf_token field
    wait.until(ec.presence_of_element_located((By.ID, "login")))
    browser.get(live_server + "/models")
    wait.until(ec.presence_of_element_located((By.ID, "login")))  # logged out: back to the login form

    assert blocked_content(browser) == []
    assert SCREENSHOT.stat().st_size > 10_000
