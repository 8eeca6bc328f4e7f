"""The live KPI dashboard in headless Chromium (Debian's chromium + chromium-driver)."""

import time
import uuid
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from .browser import headless_chromium
from .conftest import GATEWAY, REPO

KPIS = [
    "orders_executed",
    "notional_volume_usd",
    "fill_rate",
    "execution_latency_p95_ms",
    "active_users",
    "registrations",
    "social_engagement",
    "points_awarded",
]


@pytest.fixture
def browser(tmp_path):
    driver = headless_chromium(tmp_path / "profile", 1280, 900)
    yield driver
    driver.quit()


def kpi_values(driver) -> dict[str, str]:
    return {k: driver.find_element(By.ID, f"kpi-{k}").text.strip() for k in KPIS}


def numeric(text: str) -> float:
    digits = "".join(ch for ch in text if ch.isdigit() or ch in ".-")
    return float(digits) if digits not in ("", "-", ".") else 0.0


@pytest.fixture
def viewer(gateway, admin):
    """A user an admin made a viewer: it may see the figures, not trade."""
    name, password = f"viewer-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    created = gateway.post(
        "/api/v1/users/register",
        json={"username": name, "email": f"{name}@example.com", "password": password},
    )
    assert created.status_code == 201, created.text
    role = gateway.put(
        f"/api/v1/users/{created.json()['id']}/role", json={"role": "viewer"}, headers=admin
    )
    assert role.status_code == 200, role.text
    return name, password


def sign_in(driver, name: str, password: str) -> None:
    driver.find_element(By.ID, "username").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "signin-submit").click()


def wait_for(driver, condition, what: str, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while not condition(driver):
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.2)


def test_the_page_asks_for_a_sign_in_and_a_trader_is_not_shown_the_figures(browser, trader):
    browser.get(f"{GATEWAY}/dashboard")
    assert browser.find_element(By.ID, "signin").is_displayed()
    assert set(kpi_values(browser).values()) == {"–"}  # no figure before signing in
    sign_in(browser, trader["username"], trader["password"])
    error = browser.find_element(By.ID, "signin-error")
    wait_for(browser, lambda d: "cannot see the figures" in error.text, "the trader refused")
    assert set(kpi_values(browser).values()) == {"–"}


def test_dashboard_shows_eight_live_kpis_that_move_after_a_trade(browser, gateway, trader, viewer):
    browser.get(f"{GATEWAY}/dashboard")
    sign_in(browser, *viewer)
    wait_for(
        browser,
        lambda d: "–" not in kpi_values(d).values(),
        "every KPI shown after the viewer signed in",
    )
    assert not browser.find_element(By.ID, "signin").is_displayed()
    before = kpi_values(browser)

    order = gateway.post(
        "/api/v1/trading/execute",
        headers={**trader["headers"], "Idempotency-Key": str(uuid.uuid4())},
        json={"symbol": "BTC-USD", "side": "buy", "quantity": 0.01, "type": "market"},
    )
    assert order.status_code == 201, order.text

    deadline = time.monotonic() + 10  # the page refreshes itself; no reload here
    after = kpi_values(browser)
    while numeric(after["orders_executed"]) <= numeric(before["orders_executed"]):
        assert time.monotonic() < deadline, f"dashboard did not move in 10 s: {before} -> {after}"
        time.sleep(0.5)
        after = kpi_values(browser)

    assert numeric(after["orders_executed"]) > 0
    assert numeric(after["notional_volume_usd"]) > 0
    assert numeric(after["points_awarded"]) > 0
    shots = REPO / ".build" / "e2e"
    shots.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(Path(shots / "dashboard.png")))
