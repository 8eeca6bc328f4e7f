import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from gekko import kpis
from gekko.gateway import dashboard
from gekko.problems import install_problem_handlers

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
    app = FastAPI()
    install_problem_handlers(app)
    registry = CollectorRegistry()
    dashboard.install_dashboard(app, registry)
    app.state.redis = object()
    with TestClient(app) as c:
        c.registry = registry
        yield c


def test_page_renders_every_kpi_with_a_stable_id_and_real_numbers(client):
    resp = client.get("/dashboard")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    page = resp.text
    for name in kpis.KPI_NAMES:
        assert f'id="kpi-{name}"' in page
    assert re.search(r'id="kpi-orders_executed"[^>]*>12<', page)
    assert re.search(r'id="kpi-notional_volume_usd"[^>]*>\$12,345.67<', page)
    assert re.search(r'id="kpi-fill_rate"[^>]*>75.0%<', page)


def test_page_is_self_contained_and_refreshes_within_5s(client):
    page = client.get("/dashboard").text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # no CDN, no external asset
    refresh_ms = int(re.search(r"var REFRESH_MS = (\d+);", page).group(1))
    assert refresh_ms <= 5000
    assert 'fetch("/dashboard/kpis"' in page


def test_kpis_json_and_prometheus_export(client):
    body = client.get("/dashboard/kpis").json()
    assert {k: body[k] for k in kpis.KPI_NAMES} == {k: SAMPLE[k] for k in kpis.KPI_NAMES}
    text = generate_latest(client.registry).decode()
    assert "gekko_kpi_orders_executed_total 12.0" in text
    assert "gekko_kpi_fill_rate 0.75" in text


def test_kpis_unavailable_is_a_503_problem(monkeypatch):
    app = FastAPI()
    install_problem_handlers(app)
    dashboard.install_dashboard(app, CollectorRegistry())
    with TestClient(app) as c:
        resp = c.get("/dashboard/kpis")
        assert resp.status_code == 503
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert c.get("/dashboard").status_code == 200  # the page itself still loads


def test_format_value():
    assert dashboard.format_value("usd", 1234.5) == "$1,234.50"
    assert dashboard.format_value("pct", 0.5) == "50.0%"
    assert dashboard.format_value("ms", 12.345) == "12.3 ms"
    assert dashboard.format_value("int", 1234) == "1,234"
