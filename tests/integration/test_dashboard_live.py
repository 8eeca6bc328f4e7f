"""The dashboard against the real KPI store: real numbers, moving within 10 s of a trade."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, generate_latest
from redis.asyncio import Redis

from gekko.gateway.app import GATEWAY_ACCESS
from gekko.gateway.dashboard import install_dashboard
from gekko.kpis import KPI_NAMES
from gekko.security.access import route_permissions
from gekko.security.tokens import VerifyKeys

from .conftest import OPS, VERIFY_KEYS_FILE, eventually, new_user

pytestmark = pytest.mark.integration


def _app(redis_url: str) -> tuple[FastAPI, CollectorRegistry]:
    app = FastAPI()
    registry = CollectorRegistry()
    install_dashboard(app, registry)
    # The gateway's own table and keys: the figures need a viewer, operator or admin.
    app.state.permissions = route_permissions(app.routes, GATEWAY_ACCESS, owner="dashboard")
    app.state.verify_keys = VerifyKeys(VERIFY_KEYS_FILE)
    app.state.revoked_sessions = None
    app.state.redis_url = redis_url
    return app, registry


async def _get(app: FastAPI, path: str) -> httpx.Response:
    # A client per call: each asyncio.run has its own event loop (the gateway keeps one).
    app.state.redis = Redis.from_url(app.state.redis_url)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
            return await client.get(path, headers=OPS)
    finally:
        await app.state.redis.aclose()


def _kpis(app: FastAPI) -> dict:
    return asyncio.run(_get(app, "/dashboard/kpis")).json()


def test_dashboard_moves_within_10s_of_a_trade(stack, redis_server):
    app, registry = _app(redis_server.url)
    before = _kpis(app)
    assert set(KPI_NAMES) <= set(before)
    auth, _ = new_user(stack.gateway)
    traded_at = time.monotonic()
    order = httpx.post(
        f"{stack.gateway}/api/v1/trading/execute",
        json={"symbol": "AAPL", "side": "buy", "quantity": 1},
        headers=auth,
    )
    assert order.status_code == 201, order.text
    after = eventually(
        lambda: (k := _kpis(app))["orders_executed"] > before["orders_executed"] and k,
        timeout=10,
        what="orders_executed to move on /dashboard/kpis",
    )
    assert time.monotonic() - traded_at < 10
    for name in ("orders_executed", "notional_volume_usd", "registrations", "active_users"):
        assert after[name] > 0, name

    text = generate_latest(registry).decode()
    assert re.search(r"^gekko_kpi_orders_executed_total [1-9]", text, flags=re.M)
