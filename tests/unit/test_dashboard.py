import hashlib
import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from gekko import kpis
from gekko.gateway import dashboard
from gekko.gateway.app import GATEWAY_ACCESS
from gekko.problems import install_problem_handlers
from gekko.security.access import route_permissions
from gekko.security.rbac import Role

from .keys import as_role, verify_keys

VIEWER = as_role(Role.VIEWER)


SCRAPE_TOKEN = "prometheus-scrape-credential-of-the-test"


def dashboard_app(registry: CollectorRegistry) -> FastAPI:
    """The dashboard's routes alone, with the gateway's permissions for them."""
    app = FastAPI()
    install_problem_handlers(app)
    dashboard.install_dashboard(app, registry, hashlib.sha256(SCRAPE_TOKEN.encode()).hexdigest())
    app.state.verify_keys, app.state.revoked_sessions = verify_keys, None
    app.state.permissions = route_permissions(app.routes, GATEWAY_ACCESS, owner="dashboard")
    return app


SAMPLE = kpis.compute(
    {"orders_executed": 12, "orders_submitted": 16, "notional_volume_cents": 1234567},
    [3.0, 9.5],
    active=4,
)


@pytest.fixture
def client(monkeypatch):
    async def fake_read(redis):
        return dict(SAMPLE)

    monkeypatch.setattr(dashboard, "read_kpis", fake_read)
    registry = CollectorRegistry()
    app = dashboard_app(registry)
    app.state.redis = object()
    with TestClient(app) as c:
        c.registry = registry
        yield c


def test_the_page_is_a_public_shell_with_a_sign_in_form_and_no_figures(client):
    resp = client.get("/dashboard")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    page = resp.text
    for name in kpis.KPI_NAMES:
        assert re.search(f'id="kpi-{name}"[^>]*>–<', page)  # a card, but no figure
    assert '<form id="signin"' in page and 'type="password"' in page
    assert "/api/v1/users/login" in page and "/api/v1/users/token/refresh" in page
    assert "12,345" not in page and "75.0%" not in page


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        (as_role(Role.TRADER), 403),
        (as_role(Role.VIEWER), 200),
        (as_role(Role.OPERATOR), 200),
        (as_role(Role.ADMIN), 200),
        ({"Authorization": "Bearer forged"}, 401),
    ],
)
def test_the_figures_need_a_viewer_operator_or_admin(client, headers, status):
    resp = client.get("/dashboard/kpis", headers=headers)
    assert resp.status_code == status, resp.text
    if status == 403:
        assert resp.json()["detail"] == (
            "this needs the role admin or operator or viewer; you are signed in as trader"
        )


def test_page_is_self_contained_and_refreshes_within_5s(client):
    page = client.get("/dashboard").text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # no CDN, no external asset
    refresh_ms = int(re.search(r"var REFRESH_MS = (\d+);", page).group(1))
    assert refresh_ms <= 5000
    assert 'fetch("/dashboard/kpis"' in page


def test_kpis_json_and_prometheus_export(client):
    body = client.get("/dashboard/kpis", headers=VIEWER).json()
    assert {k: body[k] for k in kpis.KPI_NAMES} == {k: SAMPLE[k] for k in kpis.KPI_NAMES}
    # The series are served behind the same sign-in, not on the public /metrics.
    assert client.get("/dashboard/metrics").status_code == 401
    assert client.get("/dashboard/metrics", headers=as_role(Role.TRADER)).status_code == 403
    served = client.get("/dashboard/metrics", headers=VIEWER)
    assert served.status_code == 200 and "gekko_kpi_orders_executed_total" in served.text
    text = generate_latest(client.registry).decode()
    assert "gekko_kpi_orders_executed_total 12.0" in text
    assert "gekko_kpi_fill_rate 0.75" in text


def test_the_scrape_credential_opens_the_kpi_series_and_nothing_else(client):
    scraper = {"Authorization": f"Bearer {SCRAPE_TOKEN}"}
    served = client.get("/dashboard/metrics", headers=scraper)
    assert served.status_code == 200 and "gekko_kpi_fill_rate 0.75" in served.text
    assert client.get("/dashboard/kpis", headers=scraper).status_code == 401
    wrong = {"Authorization": f"Bearer {SCRAPE_TOKEN}x"}
    assert client.get("/dashboard/metrics", headers=wrong).status_code == 401


def test_kpis_unavailable_is_a_503_problem(monkeypatch):
    app = dashboard_app(CollectorRegistry())
    with TestClient(app) as c:
        resp = c.get("/dashboard/kpis", headers=VIEWER)
        assert resp.status_code == 503
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert c.get("/dashboard").status_code == 200  # the page itself still loads
