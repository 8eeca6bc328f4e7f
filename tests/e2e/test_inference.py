"""The signals inference service on the deployed stack, through the gateway."""

import math
from concurrent.futures import ThreadPoolExecutor

import httpx

from .conftest import GATEWAY, wait_until

WINDOW = 32  # closes per request (GET /api/v1/signals/model says so; checked below)
UPTREND = [100 * 1.004**i for i in range(WINDOW)]
DOWNTREND = list(reversed(UPTREND))
PREDICT = "/api/v1/signals/predict"


def signals_instances(gateway: httpx.Client, monitor: dict[str, str]) -> list[dict]:
    """The instances that registered themselves (the static backend lists the same URLs)."""
    listed = gateway.get("/services", headers=monitor).json()["services"]["signals"]
    return [instance for instance in listed if instance["source"] == "redis"]


def metric_sum(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_signals_is_registered_warmed_up_and_reports_its_device(gateway, monitor):
    instances = signals_instances(gateway, monitor)
    assert instances and all(i["health"] == "ok" for i in instances)
    for instance in instances:
        inference = httpx.get(f"{instance['url']}/health", timeout=5).json()["inference"]
        assert inference["warmed_up"] is True
        assert inference["device"] == "cpu" or inference["device"].startswith(("cuda", "mps"))
        # A fallback to CPU always says why.
        assert (inference["fallback_reason"] is None) or inference["device"] == "cpu"


def test_predictions_through_the_gateway(gateway, trader):
    model = gateway.get("/api/v1/signals/model", headers=trader["headers"]).json()
    assert model["window"] == WINDOW
    up = gateway.post(
        PREDICT, json={"symbol": "btc-usd", "prices": UPTREND}, headers=trader["headers"]
    )
    assert up.status_code == 200, up.text
    body = up.json()
    assert body["symbol"] == "BTC-USD" and body["signal"] == "buy"
    assert body["model_version"] == model["model_version"]
    assert math.isclose(sum(body["probabilities"].values()), 1.0, rel_tol=1e-5)
    down = gateway.post(
        PREDICT, json={"symbol": "ETH-USD", "prices": DOWNTREND}, headers=trader["headers"]
    )
    assert down.json()["signal"] == "sell"


def test_bad_windows_are_422_problems(gateway, trader):
    for prices, detail in (
        (UPTREND[:10], f"exactly {WINDOW} closes"),
        ([0.0, *UPTREND[1:]], "prices[0] must be a positive"),
    ):
        resp = gateway.post(
            PREDICT, json={"symbol": "X", "prices": prices}, headers=trader["headers"]
        )
        assert resp.status_code == 422
        assert resp.headers["content-type"] == "application/problem+json"
        assert detail in resp.json()["detail"]
    raw = '{"symbol": "X", "prices": [NaN' + ", 1.0" * (WINDOW - 1) + "]}"
    resp = gateway.post(
        PREDICT, content=raw, headers={**trader["headers"], "content-type": "application/json"}
    )
    assert resp.status_code == 422


def test_predictions_need_a_token(gateway):
    resp = gateway.post(PREDICT, json={"symbol": "X", "prices": UPTREND})
    assert resp.status_code == 401


def test_concurrent_predictions_are_all_served_through_the_batcher(gateway, trader, monitor):
    urls = [i["url"] for i in signals_instances(gateway, monitor)]

    def batched_requests() -> float:
        return sum(
            metric_sum(httpx.get(f"{u}/metrics", timeout=5).text, "gekko_inference_batch_size_sum")
            for u in urls
        )

    before = batched_requests()
    requests = 48

    def one(i: int) -> int:
        with httpx.Client(base_url=GATEWAY, timeout=10) as client:
            prices = UPTREND if i % 2 else DOWNTREND
            return client.post(
                PREDICT, json={"symbol": f"S{i}", "prices": prices}, headers=trader["headers"]
            ).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(one, range(requests)))
    assert statuses == [200] * requests
    # Every prediction went through a forward pass of the micro-batcher, none twice.
    wait_until(lambda: batched_requests() - before >= requests, "the batch-size metric")
    assert batched_requests() - before == requests


def test_openapi_documents_the_signals_api(gateway):
    paths = wait_until(
        lambda: (p := gateway.get("/openapi.json").json()["paths"]) and PREDICT in p and p,
        "the signals API in the aggregated OpenAPI document",
        timeout=45,
    )
    assert "/api/v1/signals/predict/batch" in paths
