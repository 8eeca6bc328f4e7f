"""The proxy against real loopback upstreams (stdlib servers in threads); Redis is absent."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from gekko.config import load_settings
from gekko.gateway.app import build_gateway_app
from gekko.gateway.proxy import backoff_delay

from .keys import OPERATOR, TOKEN_ENV, signing_key


class Upstream:
    def __init__(self, status: int = 200, set_cookie: str = "") -> None:
        self.status = status
        self.set_cookie = set_cookie
        self.hits: list[tuple[str, str, dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                if self.path.startswith("/api/"):
                    outer.hits.append((self.command, self.path, dict(self.headers)))
                body = json.dumps({"port": outer.port}).encode()
                self.send_response(outer.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                if outer.set_cookie:
                    self.send_header("set-cookie", outer.set_cookie)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gateway(static: dict[str, list[str]], **tuning: str) -> TestClient:
    env = {
        "GEKKO_DATABASE_URL": "postgresql://g:p@127.0.0.1:1/g",
        "GEKKO_REDIS_URL": "redis://127.0.0.1:1/0",
        **TOKEN_ENV,
        "GEKKO_PORT": "9000",
        "GEKKO_STATIC_SERVICES": json.dumps(static),
        "GEKKO_RETRY_BACKOFF_S": "0.001",
        "GEKKO_HEALTH_CHECK_INTERVAL_S": "3600",
    }
    env.update({f"GEKKO_{k.upper()}": v for k, v in tuning.items()})
    return TestClient(build_gateway_app(load_settings("gateway", env)))


@pytest.fixture
def pair() -> Iterator[tuple[Upstream, Upstream]]:
    bad, good = Upstream(503), Upstream(200)
    yield bad, good
    bad.server.shutdown()
    good.server.shutdown()


def test_idempotent_request_is_retried_on_another_instance(pair):
    bad, good = pair
    with gateway({"trading": [bad.url, good.url]}) as client:
        for _ in range(4):
            resp = client.get("/api/v1/trading/orders?limit=5")
            assert resp.status_code == 200
            assert resp.json() == {"port": good.port}
    assert len(good.hits) == 4 and 1 <= len(bad.hits) <= 4
    assert good.hits[0][1] == "/api/v1/trading/orders?limit=5"


def test_post_without_idempotency_key_is_not_resent_after_reaching_an_instance(pair):
    bad, good = pair
    with gateway({"trading": [bad.url, good.url]}) as client:
        statuses = sorted(
            client.post("/api/v1/trading/execute", json={}).status_code for _ in range(2)
        )
        assert statuses == [200, 503]  # round robin: one landed on the failing instance
        assert len(bad.hits) == 1 and len(good.hits) == 1
        keyed = [
            client.post("/api/v1/trading/execute", json={}, headers={"Idempotency-Key": f"k{i}"})
            for i in range(2)
        ]
        assert [r.status_code for r in keyed] == [200, 200]


def test_connect_errors_retry_any_method_on_another_instance(pair):
    _, good = pair
    dead = f"http://127.0.0.1:{closed_port()}"
    with gateway({"trading": [dead, good.url]}) as client:
        for _ in range(6):
            assert client.post("/api/v1/trading/execute", json={}).status_code == 200
        services = client.get("/services", headers=OPERATOR).json()
        view = {i["url"]: i for i in services["services"]["trading"]}
        # 3 requests hit the dead one first (round robin) before failing over; 5 in a row ejects.
        assert view[dead]["consecutive_failures"] >= 1 or view[dead]["ejected"]


def test_all_instances_down_maps_to_a_502_problem_and_no_retry_past_deadline():
    dead = [f"http://127.0.0.1:{closed_port()}" for _ in range(2)]
    with gateway({"users": dead}, retry_deadline_s="0") as client:
        resp = client.get("/api/v1/users/me")
        assert resp.status_code == 502
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.json()["detail"] == "could not connect to any users instance"
        metrics = client.get("/metrics").text
        assert 'gekko_upstream_retries_total{service="users"}' not in metrics


def test_backoff_is_jittered_exponential_and_bounded_by_the_deadline():
    delays = [backoff_delay(3, 0.1, 10.0) for _ in range(200)]
    assert all(0 <= d <= 0.4 for d in delays) and len(set(delays)) > 100
    assert backoff_delay(5, 1.0, 0.05) <= 0.05


def test_breaker_opens_answers_503_with_retry_after_without_calling_upstream():
    failing = Upstream(500)
    with gateway({"portfolio": [failing.url]}, breaker_open_s="45") as client:
        for _ in range(5):
            assert client.get("/api/v1/portfolio").status_code == 500
        hits = len(failing.hits)
        resp = client.get("/api/v1/portfolio")
        assert resp.status_code == 503
        assert resp.headers["content-type"] == "application/problem+json"
        assert 44 <= int(resp.headers["retry-after"]) <= 45
        assert "circuit breaker is open" in resp.json()["detail"]
        assert len(failing.hits) == hits  # upstream not called
        services = client.get("/services", headers=OPERATOR).json()
        assert services["circuit_breakers"]["portfolio"]["state"] == "open"
        assert services["circuit_breakers"]["users"]["state"] == "closed"
        metrics = client.get("/metrics").text
        assert 'gekko_circuit_breaker_state{service="portfolio"} 2.0' in metrics
        assert (
            'gekko_circuit_breaker_transitions_total{from_state="closed",service="portfolio",'
            'to_state="open"} 1.0' in metrics
        )
        assert (
            'gekko_upstream_request_duration_seconds_count{outcome="5xx",service="portfolio"}'
            in metrics
        )
    failing.server.shutdown()


def test_four_xx_never_opens_the_breaker():
    missing = Upstream(404)
    with gateway({"social": [missing.url]}) as client:
        for _ in range(12):
            assert client.get("/api/v1/social/feed").status_code == 404
        assert (
            client.get("/services", headers=OPERATOR).json()["circuit_breakers"]["social"]["state"]
            == "closed"
        )
    missing.server.shutdown()


def test_unknown_route_is_a_404_problem_and_ops_endpoints_are_in_openapi():
    with gateway({}) as client:
        resp = client.get("/api/v1/nothing/here")
        assert resp.status_code == 404
        assert resp.headers["content-type"] == "application/problem+json"
        paths = client.get("/openapi.json").json()["paths"]
        assert {"/health", "/services", "/metrics"} <= set(paths)


def test_the_gateway_refuses_bad_tokens_before_calling_upstream():
    up = Upstream(200)
    try:
        with gateway({"trading": [up.url], "users": [up.url]}) as client:
            for header in (
                "Bearer not.a.jwt",
                "Bearer " + signing_key.issue(5, "s", ttl_s=60, now=1_000_000),  # expired
            ):
                resp = client.get("/api/v1/trading/orders", headers={"Authorization": header})
                assert resp.status_code == 401, resp.text
                assert resp.headers["content-type"] == "application/problem+json"
                assert resp.json()["type"].endswith("/unauthorized")
                assert "invalid_token" in resp.headers["www-authenticate"]
            assert up.hits == []
            good = "Bearer " + signing_key.issue(5, "s")
            assert (
                client.get("/api/v1/trading/orders", headers={"Authorization": good}).status_code
                == 200
            )
            # Without a token the request goes on: the service decides what is public.
            assert client.get("/api/v1/trading/orders").status_code == 200
            # A client whose token expired can still sign in and refresh.
            stale = {"Authorization": "Bearer not.a.jwt"}
            for path in ("/api/v1/users/login", "/api/v1/users/token/refresh"):
                assert client.post(path, headers=stale, json={}).status_code == 200
            assert len(up.hits) == 4
            forwarded = {k.lower(): v for k, v in up.hits[0][2].items()}
            assert forwarded["authorization"] == good  # passed on for the service to verify
            metrics = client.get("/metrics").text
            assert "gekko_auth_rejections_total 2.0" in metrics
    finally:
        up.server.shutdown()


def test_a_cookie_an_upstream_sets_goes_to_its_caller_only_never_to_the_next_caller():
    upstream = Upstream(200, set_cookie="session=alice-secret; Path=/")
    try:
        # by name: a cookie jar (aiohttp's, before) ignores cookies of IP-addressed hosts anyway
        with gateway({"market_data": [f"http://localhost:{upstream.port}"]}) as client:
            first = client.get("/api/v1/market-data/symbols")
            client.cookies.clear()  # the next caller is someone else
            client.get("/api/v1/market-data/symbols")
        assert first.headers["set-cookie"].startswith("session=alice-secret")
        assert "cookie" not in {name.lower() for name in upstream.hits[1][2]}
    finally:
        upstream.server.shutdown()
