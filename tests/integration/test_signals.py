"""The signals service in the integration stack: through the gateway, registered, in the docs."""

from __future__ import annotations

import httpx

from gekko.signals.features import WINDOW

from .conftest import OPS, eventually, new_user

DOWNTREND = [500 * 0.995**i for i in range(WINDOW)]


def test_predict_through_the_gateway(stack):
    auth, _ = new_user(stack.gateway)
    resp = httpx.post(
        f"{stack.gateway}/api/v1/signals/predict",
        json={"symbol": "ETH-USD", "prices": DOWNTREND},
        headers=auth,
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["signal"] == "sell" and body["device"] == "cpu"
    assert resp.headers.get("x-correlation-id")


def test_bad_window_through_the_gateway_is_a_422_problem(stack):
    auth, _ = new_user(stack.gateway)
    resp = httpx.post(
        f"{stack.gateway}/api/v1/signals/predict",
        json={"symbol": "ETH-USD", "prices": DOWNTREND[:5]},
        headers=auth,
        timeout=10,
    )
    assert resp.status_code == 422
    assert resp.headers["content-type"] == "application/problem+json"
    assert f"exactly {WINDOW} closes" in resp.json()["detail"]


def test_signals_is_registered_and_documented(stack):
    instances = httpx.get(f"{stack.gateway}/services", headers=OPS).json()["services"]["signals"]
    assert instances and all(i["health"] == "ok" for i in instances)
    health = httpx.get(f"http://127.0.0.1:{stack.ports['signals']}/health").json()
    assert health["inference"]["device"] == "cpu" and health["inference"]["warmed_up"]
    # The gateway fetches each service's document in the background: wait for this one.
    eventually(
        lambda: (
            "/api/v1/signals/predict" in httpx.get(f"{stack.gateway}/openapi.json").json()["paths"]
        ),
        timeout=40,
        what="the signals API in the aggregated OpenAPI document",
    )
