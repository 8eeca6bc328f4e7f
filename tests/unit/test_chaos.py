"""Chaos fault injection: a fraction of a service's API requests answer an injected 500."""

from __future__ import annotations

import logging

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from gekko.chaos import ChaosMiddleware, effective_error_rate
from gekko.config import ConfigError, load_settings
from gekko.security.rbac import PUBLIC
from gekko.services.base import build_service_app

from .keys import TOKEN_ENV

ENV = {
    "GEKKO_DATABASE_URL": "postgresql://g:p@127.0.0.1:1/g",
    "GEKKO_REDIS_URL": "redis://127.0.0.1:1/0",
    **TOKEN_ENV,
}


def service(**env: str) -> TestClient:
    router = APIRouter()

    @router.get("/api/v1/social/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    @router.get("/status")
    async def status() -> dict[str, str]:
        return {"ok": "yes"}

    settings = load_settings("social", {**ENV, **env})
    # No lifespan (no database here): routes and middleware are what is under test.
    access = {("GET", "/api/v1/social/ping"): PUBLIC, ("GET", "/status"): PUBLIC}
    return TestClient(build_service_app("social", settings, [router], access))


def five_xx(metrics: str, route: str) -> float:
    for line in metrics.splitlines():
        if (
            line.startswith("gekko_http_requests_total{")
            and f'route="{route}"' in line
            and 'status_class="5xx"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_rate_one_fails_every_api_request_and_counts_it_as_a_5xx():
    client = service(GEKKO_CHAOS_ERROR_RATE="1", GEKKO_ENVIRONMENT="staging")
    for _ in range(4):
        resp = client.get("/api/v1/social/ping", headers={"X-Correlation-ID": "chaos-1"})
        assert resp.status_code == 500
        assert resp.headers["content-type"] == "application/problem+json"
        body = resp.json()
        assert "injected fault" in body["detail"]
        assert body["correlation_id"] == "chaos-1"
    assert client.get("/status").status_code == 200  # outside /api/v1: untouched
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert five_xx(metrics.text, "social") == 4.0
    assert five_xx(metrics.text, "metrics") == 0.0


def test_rate_zero_changes_nothing():
    client = service(GEKKO_CHAOS_ERROR_RATE="0")
    assert all(client.get("/api/v1/social/ping").status_code == 200 for _ in range(20))
    assert five_xx(client.get("/metrics").text, "social") == 0.0


def test_refused_in_prod_with_a_warning(caplog):
    caplog.set_level(logging.WARNING, "gekko.chaos")
    client = service(GEKKO_CHAOS_ERROR_RATE="1", GEKKO_ENVIRONMENT="prod")
    assert client.get("/api/v1/social/ping").status_code == 200
    assert "refused in environment 'prod'" in caplog.text


def test_effective_rate_and_env_validation():
    staging = load_settings("users", {**ENV, "GEKKO_CHAOS_ERROR_RATE": "0.25"})
    assert staging.chaos_error_rate == 0.25
    assert effective_error_rate(staging) == 0.25
    assert load_settings("users", ENV).chaos_error_rate == 0.0
    prod = load_settings(
        "users", {**ENV, "GEKKO_CHAOS_ERROR_RATE": "0.25", "GEKKO_ENVIRONMENT": "production"}
    )
    assert effective_error_rate(prod) == 0.0
    for bad in ("1.5", "-0.1", "nan", "often"):
        with pytest.raises(ConfigError, match="GEKKO_CHAOS_ERROR_RATE"):
            load_settings("users", {**ENV, "GEKKO_CHAOS_ERROR_RATE": bad})


def test_a_fraction_follows_the_random_draw():
    draws = iter([0.1, 0.9, 0.29, 0.3, 0.5])
    seen: list[str] = []

    async def app(scope, receive, send):  # the wrapped service
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    client = TestClient(ChaosMiddleware(app, rate=0.3, rng=lambda: next(draws)))
    codes = [client.get("/api/v1/users/me").status_code for _ in range(5)]
    assert codes == [500, 200, 500, 200, 200]
    assert client.get("/health").status_code == 200  # never drawn for: no StopIteration
    assert len(seen) == 4
