"""Issue 3 through the deployed gateway: events, rate-limit headers, OpenAPI, bad input."""

import uuid

from .conftest import wait_until


def test_executed_order_reaches_portfolio_gamification_social_and_kpis(gateway, trader, monitor):
    before = gateway.get("/dashboard/kpis", headers=monitor).json()
    sharing = gateway.put(
        "/api/v1/social/sharing", json={"share_trades": True}, headers=trader["headers"]
    )
    assert sharing.status_code == 200, sharing.text
    order = gateway.post(
        "/api/v1/trading/execute",
        headers={**trader["headers"], "Idempotency-Key": str(uuid.uuid4())},
        json={"symbol": "SOL-USD", "side": "buy", "quantity": 2, "type": "market"},
    )
    assert order.status_code == 201, order.text
    placed = order.json()
    assert placed["fee"] > 0

    def position():
        body = gateway.get("/api/v1/portfolio", headers=trader["headers"]).json()
        return [p for p in body["positions"] if p["symbol"] == "SOL-USD"]

    positions = wait_until(position, "the portfolio to hold the SOL-USD buy")
    assert positions[0]["quantity"] == 2

    def achievements():
        profile = gateway.get(
            f"/api/v1/gamification/user/{trader['id']}/profile", headers=trader["headers"]
        ).json()
        return "first_trade" in {a["code"] for a in profile["achievements"]} and profile

    assert wait_until(achievements, "the first_trade achievement")["points"] > 0

    def shared():
        items = gateway.get("/api/v1/social/feed", headers=trader["headers"]).json()["items"]
        return [i for i in items if (i.get("trade") or {}).get("order_id") == placed["id"]]

    wait_until(shared, "the trade share in the social feed")

    def kpis_moved():
        now = gateway.get("/dashboard/kpis", headers=monitor).json()
        return now["orders_executed"] > before["orders_executed"] and now

    after = wait_until(kpis_moved, "the KPIs to count the order", timeout=10)
    assert after["notional_volume_usd"] > before["notional_volume_usd"]


def test_rate_limit_headers_on_api_responses(gateway, trader):
    response = gateway.get("/api/v1/portfolio", headers=trader["headers"])
    assert response.status_code == 200
    assert "200;w=60" in response.headers["ratelimit-policy"]
    assert "remaining=" in response.headers["ratelimit"]


def test_openapi_lists_the_domain_endpoints(gateway):
    paths = wait_until(
        lambda: (
            (p := gateway.get("/openapi.json").json()["paths"])
            and "/api/v1/trading/execute" in p
            and p
        ),
        "the aggregated OpenAPI document",
    )
    for path in (
        "/api/v1/users/register",
        "/api/v1/trading/execute",
        "/api/v1/social/feed",
        "/api/v1/gamification/user/{user_id}/profile",
        "/health",
        "/services",
    ):
        assert path in paths


def test_bad_input_is_a_problem_not_a_500(gateway, trader):
    bad = gateway.post(
        "/api/v1/trading/execute",
        headers=trader["headers"],
        json={"symbol": "NOPE", "side": "sideways", "quantity": -1},
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert bad.json()["detail"]
    garbage = gateway.post(
        "/api/v1/users/register", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert 400 <= garbage.status_code < 500
    assert garbage.headers["content-type"].startswith("application/problem+json")


def test_services_show_breakers_and_instance_health(gateway, monitor):
    assert gateway.get("/services").status_code == 401  # the platform's state is not public
    body = gateway.get("/services", headers=monitor).json()
    assert set(body["circuit_breakers"]) >= {"trading", "users"}
    assert all(b["state"] == "closed" for b in body["circuit_breakers"].values())
