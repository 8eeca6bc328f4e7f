from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from starlette.requests import Request

from gekko.config import load_settings
from gekko.correlation import correlation_id_var
from gekko.gateway.app import build_gateway_app
from gekko.gateway.proxy import (
    downstream_headers,
    may_retry_after_send,
    upstream_request_headers,
    with_trace_headers,
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
    names = {k for k, _ in headers}
    assert not names & {b"host", b"connection", b"x-private", b"transfer-encoding"}
    values = dict(headers)
    assert values[b"authorization"] == b"Bearer t"
    assert values[b"traceparent"] == b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert [v for k, v in headers if k == b"x-correlation-id"] == [b"corr-1"]
    assert values[b"x-forwarded-for"] == b"127.0.0.9"
    assert values[b"x-forwarded-host"] == b"gw:8000"


def test_upstream_headers_extend_the_forwarding_chain_and_meet_expect_here():
    headers = upstream_request_headers(
        _request(
            [
                (b"host", b"gw:8000"),
                (b"x-forwarded-for", b"10.0.0.1"),
                (b"x-forwarded-proto", b"https"),  # a caller cannot claim these
                (b"x-forwarded-host", b"bank.example"),
                (b"expect", b"100-continue"),
                (b"content-length", b"5"),
            ]
        )
    )
    assert (b"x-forwarded-for", b"10.0.0.1, 127.0.0.9") in headers
    assert [v for k, v in headers if k == b"x-forwarded-proto"] == [b"http"]
    assert [v for k, v in headers if k == b"x-forwarded-host"] == [b"gw:8000"]
    # the gateway read the body already; Content-Length is recomputed by the upstream client
    assert not {k for k, _ in headers} & {b"expect", b"content-length"}


def test_trace_headers_replace_the_callers_when_a_span_is_traced():
    caller = [(b"traceparent", b"00-caller-01"), (b"tracestate", b"x=1"), (b"accept", b"*/*")]
    tracer = trace.get_tracer("test", tracer_provider=TracerProvider())
    with tracer.start_as_current_span("forward"):
        sent = with_trace_headers(caller)
    assert [k for k, _ in sent].count(b"traceparent") == 1
    assert dict(sent)[b"traceparent"] != b"00-caller-01"
    assert b"tracestate" not in dict(sent) and (b"accept", b"*/*") in sent
    assert with_trace_headers(caller) == caller  # no span: the caller's own are passed on


def test_downstream_headers_keep_repeated_values_and_drop_hop_by_hop():
    upstream = [
        (b"Content-Type", b"application/json"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
        (b"Connection", b"close, X-Internal"),
        (b"X-Internal", b"secret"),
        (b"Content-Length", b"10"),
        (b"Server", b"uvicorn"),
    ]
    out = downstream_headers(upstream)
    assert (b"set-cookie", b"a=1") in out and (b"set-cookie", b"b=2") in out
    assert (b"content-type", b"application/json") in out
    assert not {k for k, _ in out} & {b"connection", b"content-length", b"x-internal", b"server"}


def test_retry_policy():
    assert may_retry_after_send("GET", [])
    assert may_retry_after_send("DELETE", [])
    assert not may_retry_after_send("POST", [])
    assert may_retry_after_send("POST", [(b"idempotency-key", b"k")])
    assert not may_retry_after_send("PATCH", [])


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
