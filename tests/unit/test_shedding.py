"""Load shedding by priority (gekko.gateway.shedding): what waits is refused first."""

from gekko.gateway.shedding import LoadShedder, Priority, priority_of

from .test_gateway_proxy import Upstream, gateway


def test_orders_and_cancels_come_first_social_and_gamification_last():
    assert priority_of("trading", "POST") is Priority.CRITICAL
    assert priority_of("trading", "DELETE") is Priority.CRITICAL
    assert priority_of("trading", "GET") is Priority.NORMAL
    assert priority_of("market_data", "GET") is Priority.NORMAL
    assert priority_of("users", "POST") is Priority.NORMAL
    assert priority_of("social", "GET") is Priority.LOW
    assert priority_of("gamification", "POST") is Priority.LOW


def test_each_priority_is_shed_at_its_ceiling_and_orders_never():
    shedder = LoadShedder(normal_at=4, low_at=2)
    for _ in range(2):
        shedder.started()
    assert not shedder.admit(Priority.LOW)
    assert shedder.admit(Priority.NORMAL) and shedder.admit(Priority.CRITICAL)
    for _ in range(2):
        shedder.started()
    assert not shedder.admit(Priority.NORMAL)
    for _ in range(1000):
        shedder.started()
    assert shedder.admit(Priority.CRITICAL)
    for _ in range(1003):
        shedder.finished()
    assert shedder.in_flight == 1 and shedder.admit(Priority.LOW)
    # A low ceiling above the normal one would shed the normal first: it is capped.
    assert LoadShedder(normal_at=4, low_at=10).ceilings[Priority.LOW] == 4


def test_a_shed_request_is_a_503_problem_with_retry_after_and_is_counted():
    upstream = Upstream(200)
    try:
        with gateway(
            {"social": [upstream.url], "trading": [upstream.url]},
            shed_low_in_flight="2",
            shed_normal_in_flight="3",
        ) as client:
            shedder = client.app.state.upstreams.shedder
            shedder.in_flight = 3  # as if three requests were under way
            shed = client.get("/api/v1/social/feed")
            assert shed.status_code == 503
            assert shed.headers["retry-after"] == "1"
            assert shed.headers["content-type"] == "application/problem+json"
            assert shed.json()["type"] == "https://gekko.dev/problems/overloaded"
            assert "serves orders first" in shed.json()["detail"]
            assert client.get("/api/v1/trading/orders").status_code == 503
            order = client.post("/api/v1/trading/execute", json={})
            assert order.status_code == 200  # never shed
            assert shedder.in_flight == 3  # what was admitted is counted out again
            metrics = client.get("/metrics").text
            assert (
                'gekko_gateway_shed_requests_total{priority="low",service="social"} 1.0' in metrics
            )
            assert [hit[1] for hit in upstream.hits] == ["/api/v1/trading/execute"]
    finally:
        upstream.server.shutdown()
