"""Headless Debian Chromium for the browser tests: one way to start it, and its blocked-content log."""
from __future__ import annotations

import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--window-size=1280,900")


def chromium(keep_console: bool = False, hide_scrollbars: bool = False):
    """A headless Chromium WebDriver (skips the test when Debian's chromium/chromedriver are missing).

    `keep_console` keeps the browser console, where CSP violations are reported; `hide_scrollbars`
    keeps a scrollbar from narrowing the page, so a sideways-scroll check measures the page alone.
    """
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium / chromium-driver not installed (apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in _FLAGS + (("--hide-scrollbars",) if hide_scrollbars else ()):
        options.add_argument(flag)
    if keep_console:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


def blocked_content(driver) -> list[str]:
    """Console messages of content the page's security policy refused."""
    return [entry["message"] for entry in driver.get_log("browser")
            if "Content Security Policy" in entry["message"] or "Refused to" in entry["message"]]
