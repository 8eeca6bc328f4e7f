from fastapi.testclient import TestClient
from multidict import CIMultiDict, CIMultiDictProxy
from starlette.requests import Request

from gekko.config import load_settings
from gekko.correlation import correlation_id_var
from gekko.gateway.app import build_gateway_app
from gekko.gateway.proxy import (
    downstream_headers,
    may_retry_after_send,
    upstream_request_headers,
)
from gekko.metrics import default_route_label

from .keys import OPERATOR, TOKEN_ENV


def _request(headers: list[tuple[bytes, bytes]]) -> Request:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/trading/execute",
        "raw_path": b"/api/v1/trading/execute",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.9", 5555),
        "server": ("127.0.0.1", 8000),
        "scheme": "http",
    }
    return Request(scope)


def test_upstream_headers_drop_hop_by_hop_and_add_forwarding():
    token = correlation_id_var.set("corr-1")
    try:
        headers = upstream_request_headers(
            _request(
                [
                    (b"host", b"gw:8000"),
                    (b"connection", b"keep-alive, x-private"),
                    (b"x-private", b"1"),
                    (b"transfer-encoding", b"chunked"),
                    (b"authorization", b"Bearer t"),
                    (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                    (b"x-correlation-id", b"spoofed"),
                ]
            )
        )
    finally:
        correlation_id_var.reset(token)
    names = {k.lower() for k in headers}
    assert not names & {"host", "connection", "x-private", "transfer-encoding"}
    assert headers["authorization"] == "Bearer t"
    assert headers["traceparent"] == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert headers["x-correlation-id"] == "corr-1"
    assert headers["x-forwarded-for"] == "127.0.0.9"
    assert headers["x-forwarded-host"] == "gw:8000"


def test_downstream_headers_keep_repeated_values_and_drop_hop_by_hop():
    upstream = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Content-Type", "application/json"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
                ("Connection", "close"),
                ("Content-Length", "10"),
            ]
        )
    )
    out = downstream_headers(upstream)
    assert (b"set-cookie", b"a=1") in out and (b"set-cookie", b"b=2") in out
    assert not {k for k, _ in out} & {b"connection", b"content-length"}


def test_retry_policy():
    assert may_retry_after_send("GET", CIMultiDict())
    assert may_retry_after_send("DELETE", CIMultiDict())
    assert not may_retry_after_send("POST", CIMultiDict())
    assert may_retry_after_send("POST", CIMultiDict({"Idempotency-Key": "k"}))
    assert not may_retry_after_send("PATCH", CIMultiDict())


def test_route_labels_have_bounded_cardinality():
    assert default_route_label("/api/v1/trading/orders/123") == "trading"
    assert default_route_label("/api/v1/users-12345/x") == "unknown"
    assert default_route_label("/health") == "health"
    assert default_route_label("/wp-admin/x") == "other"


def test_gateway_without_instances_answers_problems_not_500():
    # Redis and PostgreSQL point at a closed loopback port: both checks fail fast.
    settings = load_settings(
        "gateway",
        {
            "GEKKO_DATABASE_URL": "postgresql://g:p@127.0.0.1:1/g",
            "GEKKO_REDIS_URL": "redis://127.0.0.1:1/0",
            **TOKEN_ENV,
            "GEKKO_PORT": "9000",
        },
    )
    with TestClient(build_gateway_app(settings)) as client:
        resp = client.post("/api/v1/trading/execute", json={})
        assert resp.status_code == 503
        assert resp.headers["content-type"] == "application/problem+json"
        assert "trading" in resp.json()["detail"]

        health = client.get("/health")
        assert health.status_code == 503
        body = health.json()
        assert body["checks"]["redis"]["status"] == "down"
        assert body["checks"]["services"]["users"] == {
            "status": "down",
            "healthy_instances": 0,
            "static_instances": 0,
        }

        services = client.get("/services", headers=OPERATOR).json()["services"]
        assert services["market_data"] == []

        metrics = client.get("/metrics").text
        assert 'route="trading",status_class="5xx"' in metrics
        assert 'gekko_service_instances{health="ok",service="users"} 0.0' in metrics
        assert "gekko_kpi_" not in metrics  # business figures are for signed-in viewers only

        assert client.get("/openapi.json").status_code == 200
