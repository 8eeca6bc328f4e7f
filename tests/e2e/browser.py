"""Headless Chromium for the browser tests (Debian's chromium and chromium-driver)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service


def headless_chromium(profile: Path, width: int, height: int, console_errors: bool = False):
    """A driver with its own profile folder; console_errors keeps the page's SEVERE log."""
    chromedriver = shutil.which("chromedriver")
    if not chromedriver:
        pytest.fail(
            "chromedriver missing: apt-get install chromium chromium-driver (make e2e does)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    if console_errors:
        options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_window_size(width, height)
    return driver
