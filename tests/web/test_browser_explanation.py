"""Headless Chromium on the scan page: "Show explanation" polls while the task waits in the broker, the
worker's code (run here) draws the overlay, and the page shows it; no CSP violation, no sideways scroll."""
from __future__ import annotations

import time

import pytest

from tasks import explain
from test_browser_pages import _login, _shoot, _wait, browser  # noqa: F401  (fixture)
from test_web_explanations import classified  # noqa: F401  (fixture)
from web_helpers import queued_messages

pytestmark = pytest.mark.browser


def test_show_explanation_waits_for_the_worker_then_shows_the_overlay(app, live_server, browser, broker,  # noqa: F811
                                                                      classified):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select

    scan_id, version_id = classified
    _login(app, browser, live_server, f"/scans/{scan_id}", "viewer")
    Select(browser.find_element(By.ID, "explanation-model")).select_by_value("custom_cnn")
    browser.find_element(By.ID, "explanation-show").click()
    _wait(browser).until(ec.text_to_be_present_in_element((By.ID, "explanation-status"), "computing"))
    assert browser.find_element(By.ID, "explanation-figure").get_attribute("hidden") is not None

    deadline = time.monotonic() + 10
    while not (messages := queued_messages(broker, "inference")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [m["args"] for m in messages] == [[scan_id, version_id, "custom_cnn"]]
    time.sleep(2.5)  # the page asks again meanwhile, without queuing a second task
    assert len(queued_messages(broker, "inference")) == 1
    assert explain.explain_scan(*messages[0]["args"])["status"] == "ready"  # the worker

    image = browser.find_element(By.ID, "explanation-image")
    _wait(browser, 15).until(lambda b: b.execute_script("return arguments[0].complete && arguments[0].naturalWidth",
                                                        image) == 48)
    assert browser.find_element(By.ID, "explanation-figure").get_attribute("hidden") is None
    assert "custom_cnn said" in browser.find_element(By.ID, "explanation-caption").text
    assert browser.find_element(By.ID, "explanation-status").text == ""
    _shoot(browser, "scan-explanation", "desktop")
    _shoot(browser, "scan-explanation", "phone")


def test_an_empty_map_is_told_as_such(app, live_server, browser, broker, classified):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select

    scan_id, version_id = classified
    settings = app.extensions["mri"].settings
    assert explain.explain_scan(scan_id, version_id, "custom_cnn")["status"] == "ready"  # computed beforehand
    # As a map with no positive evidence anywhere records it
    explain.explanation_path(settings, version_id, scan_id, "custom_cnn").with_suffix(".json").write_text(
        '{"heat_share": 0.0}')
    _login(app, browser, live_server, f"/scans/{scan_id}", "viewer")
    Select(browser.find_element(By.ID, "explanation-model")).select_by_value("custom_cnn")
    browser.find_element(By.ID, "explanation-show").click()
    _wait(browser).until(ec.text_to_be_present_in_element((By.ID, "explanation-caption"), "no region"))
    caption = browser.find_element(By.ID, "explanation-caption").text
    assert "the map is empty" in caption and "warmer the colour" not in caption
