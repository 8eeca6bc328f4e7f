"""The deployed gateway: health, discovery, metrics and a real business call."""

import asyncio
import uuid

import asyncpg

from .conftest import SERVICES


def test_health_reports_every_dependency_healthy(gateway):
    body = gateway.get("/health").json()
    assert body["status"] == "ok"
    checks = body["checks"]
    assert checks["postgres"]["status"] == "ok"
    assert checks["redis"]["status"] == "ok"
    assert sorted(checks["services"]) == sorted(SERVICES)
    assert all(s["status"] == "ok" for s in checks["services"].values()), checks["services"]


def test_services_lists_every_service_registered_and_healthy(gateway, monitor):
    services = gateway.get("/services", headers=monitor).json()["services"]
    for name in SERVICES:
        instances = services[name]
        assert instances, f"{name} has no registered instance"
        registered = [i for i in instances if i["source"] == "redis"]
        assert any(i["health"] == "ok" for i in registered), instances
        assert all(i["url"].startswith("http://127.0.0.1:") for i in instances)


def test_metrics_are_prometheus_text(gateway):
    response = gateway.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in response.text
    assert "gekko_service_instances" in response.text


def test_trade_through_the_gateway_is_stored_in_postgresql(gateway, trader, secret):
    key = f"e2e-{uuid.uuid4()}"
    order = gateway.post(
        "/api/v1/trading/execute",
        headers={**trader["headers"], "Idempotency-Key": key},
        json={"symbol": "ETH-USD", "side": "buy", "quantity": 0.5, "type": "market"},
    )
    assert order.status_code == 201, order.text
    placed = order.json()
    assert placed["status"] == "filled" and placed["price"] > 0

    async def stored_rows():
        conn = await asyncpg.connect(
            host="127.0.0.1",
            port=5432,
            user="gekko",
            database="gekko",
            password=secret("postgres_password"),
        )
        try:
            return await conn.fetch(
                "SELECT id::text, symbol, side FROM trading.orders WHERE user_id::text = $1",
                str(trader["id"]),
            )
        finally:
            await conn.close()

    rows = asyncio.run(stored_rows())
    assert [(r["id"], r["symbol"], r["side"]) for r in rows] == [
        (str(placed["id"]), "ETH-USD", "buy")
    ]


def test_unauthenticated_trade_is_refused_with_a_problem(gateway):
    response = gateway.post(
        "/api/v1/trading/execute",
        json={"symbol": "BTC-USD", "side": "buy", "quantity": 1, "type": "market"},
    )
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 401


def test_every_response_carries_a_correlation_id(gateway, monitor):
    echoed = gateway.get("/health", headers={"X-Correlation-ID": "e2e-corr-1"})
    assert echoed.headers["x-correlation-id"] == "e2e-corr-1"
    assert gateway.get("/services", headers=monitor).headers.get("x-correlation-id")
