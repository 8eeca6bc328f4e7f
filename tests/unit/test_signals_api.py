"""The signals service over HTTP (in process): predictions, validation, auth, health, metrics."""

from __future__ import annotations

import math

import pytest
from fastapi.testclient import TestClient

from gekko.apps import build_app
from gekko.config import ConfigError, load_settings
from gekko.signals.features import WINDOW

from .keys import TOKEN_ENV, signing_key

ENV = {
    # Unreachable on purpose: signals needs neither to predict; /health reports them down.
    "GEKKO_DATABASE_URL": "postgresql://g:p@127.0.0.1:1/g",
    "GEKKO_REDIS_URL": "redis://127.0.0.1:1/0",
    **TOKEN_ENV,
}
UPTREND = [100 * 1.004**i for i in range(WINDOW)]


@pytest.fixture(scope="module")
def client(signal_model):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEKKO_SIGNAL_MODEL_PATH", str(signal_model))
        mp.setenv("GEKKO_INFERENCE_DEVICE", "cuda")  # not on this host: falls back to CPU
        mp.setenv("GEKKO_INFERENCE_MAX_WAIT_MS", "1")
        app = build_app(load_settings("signals", ENV))
        with TestClient(app) as test_client:
            test_client.headers["Authorization"] = "Bearer " + signing_key.issue(7, "session-7")
            yield test_client


def test_predict_returns_a_signal_with_probabilities(client):
    resp = client.post("/api/v1/signals/predict", json={"symbol": "btc-usd", "prices": UPTREND})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["symbol"] == "BTC-USD" and body["device"] == "cpu"
    assert set(body["probabilities"]) == {"sell", "hold", "buy"}
    assert math.isclose(sum(body["probabilities"].values()), 1.0, rel_tol=1e-5)
    assert body["signal"] == max(body["probabilities"], key=body["probabilities"].get)
    assert body["signal"] == "buy"  # a steady climb is an up-trend
    assert body["model_version"].startswith("mlp-w32-")


def test_batch_form_matches_single_predictions(client):
    down = list(reversed(UPTREND))
    resp = client.post(
        "/api/v1/signals/predict/batch",
        json={"items": [{"symbol": "A", "prices": UPTREND}, {"symbol": "B", "prices": down}]},
    )
    assert resp.status_code == 200, resp.text
    batch = resp.json()["predictions"]
    assert [p["symbol"] for p in batch] == ["A", "B"]
    assert batch[1]["signal"] == "sell"
    single = client.post("/api/v1/signals/predict", json={"symbol": "B", "prices": down}).json()
    assert batch[1]["probabilities"] == pytest.approx(single["probabilities"], abs=1e-6)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"symbol": "X", "prices": UPTREND[:-1]}, f"exactly {WINDOW} closes"),
        ({"symbol": "X", "prices": [*UPTREND[:-1], 0]}, f"prices[{WINDOW - 1}] must be a positive"),
        ({"symbol": "X", "prices": [-5.0, *UPTREND[1:]]}, "prices[0] must be a positive"),
        ({"symbol": "X"}, "body.prices: Field required"),
        ({"prices": UPTREND}, "body.symbol: Field required"),
        ({"symbol": "X", "prices": ["a", *UPTREND[1:]]}, "body.prices.0"),
    ],
)
def test_bad_input_is_a_422_problem_that_says_what_is_wrong(client, body, detail):
    resp = client.post("/api/v1/signals/predict", json=body)
    assert resp.status_code == 422
    assert resp.headers["content-type"] == "application/problem+json"
    assert detail in resp.json()["detail"]


def test_nan_prices_are_refused(client):
    raw = '{"symbol": "X", "prices": [NaN' + ", 1.0" * (WINDOW - 1) + "]}"
    resp = client.post(
        "/api/v1/signals/predict", content=raw, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 422 and "body.prices.0" in resp.json()["detail"]


def test_a_bad_batch_item_is_named(client):
    items = [{"symbol": "A", "prices": UPTREND}, {"symbol": "B", "prices": [1.0]}]
    resp = client.post("/api/v1/signals/predict/batch", json={"items": items})
    assert resp.status_code == 422 and resp.json()["detail"].startswith("items[1]: ")


def test_predictions_need_a_signed_in_user(client):
    resp = client.post(
        "/api/v1/signals/predict",
        json={"symbol": "X", "prices": UPTREND},
        headers={"Authorization": ""},
    )
    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/problem+json"


def test_health_reports_the_device_and_the_fallback(client):
    inference = client.get("/health").json()["inference"]
    assert inference["device"] == "cpu" and inference["requested_device"] == "cuda"
    assert "CUDA is not available" in inference["fallback_reason"]
    assert inference["warmed_up"] is True


def test_model_endpoint_tells_clients_the_window(client):
    body = client.get("/api/v1/signals/model").json()
    assert body["window"] == WINDOW and body["classes"] == ["sell", "hold", "buy"]


def test_metrics_count_predictions_batches_and_the_device(client):
    client.post("/api/v1/signals/predict", json={"symbol": "X", "prices": UPTREND})
    text = client.get("/metrics").text
    assert 'gekko_inference_predictions_total{signal="buy"}' in text
    assert "gekko_inference_latency_seconds_count" in text
    assert "gekko_inference_batch_size_count" in text
    assert 'gekko_inference_device_info{device="cpu",fallback="true",requested="cuda"} 1.0' in text


def test_without_a_model_file_the_service_does_not_build(monkeypatch, tmp_path):
    monkeypatch.setenv("GEKKO_SIGNAL_MODEL_PATH", str(tmp_path / "none.pt"))
    with pytest.raises(ConfigError, match="no such model file"):
        build_app(load_settings("signals", ENV))


def test_an_unloadable_model_file_is_a_configuration_error(monkeypatch, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    monkeypatch.setenv("GEKKO_SIGNAL_MODEL_PATH", str(junk))
    with pytest.raises(ConfigError, match="cannot load signal model.*train-signal-model"):
        build_app(load_settings("signals", ENV))
