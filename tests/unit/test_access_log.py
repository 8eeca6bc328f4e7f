"""The access log: one JSON line per API request with its correlation id, none for probes."""

from __future__ import annotations

import io
import logging

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from gekko.config import ConfigError, access_log_setting
from gekko.correlation import CorrelationIdMiddleware
from gekko.logs import JsonFormatter
from gekko.metrics import MetricsMiddleware, RequestMetrics


def served_lines(access_log: bool, *paths: str, level: int = logging.INFO) -> list[dict]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("trading", "trading-1"))
    logger = logging.getLogger("gekko.http")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(level)
    app = FastAPI()

    @app.get("/api/v1/trading/orders")
    async def orders() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    metrics = RequestMetrics(CollectorRegistry(), "trading")
    app.add_middleware(MetricsMiddleware, metrics=metrics, access_log=access_log)
    app.add_middleware(CorrelationIdMiddleware)
    try:
        client = TestClient(app)
        for path in paths:
            client.get(path, headers={"x-correlation-id": "c-42"})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_each_api_request_is_one_line_with_its_correlation_id():
    (line,) = served_lines(True, "/api/v1/trading/orders", "/health", "/metrics")
    assert line["correlation_id"] == "c-42" and line["service"] == "trading"
    assert (line["method"], line["path"], line["status"]) == ("GET", "/api/v1/trading/orders", 200)
    assert line["duration_ms"] >= 0


def test_off_means_a_line_at_debug_only():
    assert served_lines(False, "/api/v1/trading/orders") == []
    (line,) = served_lines(False, "/api/v1/trading/orders", "/health", level=logging.DEBUG)
    assert line["level"] == "DEBUG" and line["path"] == "/api/v1/trading/orders"


def test_the_setting_is_validated():
    assert access_log_setting({}) is True
    assert access_log_setting({"GEKKO_ACCESS_LOG": "off"}) is False
    with pytest.raises(ConfigError, match="GEKKO_ACCESS_LOG"):
        access_log_setting({"GEKKO_ACCESS_LOG": "sometimes"})
