"""One trace from the gateway through trading, the event bus and the portfolio consumer."""

from __future__ import annotations

import secrets

import httpx
import orjson
import pytest

from .conftest import Stack, eventually, new_user

pytestmark = pytest.mark.integration


def _log_lines(stack: Stack, name: str) -> list[dict]:
    lines = []
    for raw in (stack.root / f"{name}.log").read_text(errors="replace").splitlines():
        if raw.startswith("{"):
            lines.append(orjson.loads(raw))
    return lines


def test_trace_id_follows_order_from_gateway_to_portfolio_consumer(stack):
    auth, _ = new_user(stack.gateway)
    trace_id = secrets.token_hex(16)
    correlation_id = f"trace-test-{secrets.token_hex(4)}"
    resp = httpx.post(
        f"{stack.gateway}/api/v1/trading/execute",
        json={"symbol": "SOL-USD", "side": "buy", "quantity": 1},
        headers={
            **auth,
            "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01",
            "X-Correlation-ID": correlation_id,
        },
    )
    assert resp.status_code == 201, resp.text

    def consumed() -> list[dict]:
        return [
            line
            for line in _log_lines(stack, "portfolio")
            if line.get("event_type") == "order.executed" and line.get("trace_id") == trace_id
        ]

    [line] = eventually(consumed, what="portfolio consumer log line in the caller's trace")
    assert line["consumer_group"] == "portfolio"
    assert line["correlation_id"] == correlation_id  # carried in the event envelope
    # The same trace id is in the outbox row trading wrote in the request's transaction.
    rows = stack.postgres.fetch(
        "SELECT traceparent FROM trading.outbox WHERE payload->>'order_id' = $1 "
        "AND type = 'order.executed'",
        str(resp.json()["id"]),
    )
    assert rows[0]["traceparent"].split("-")[1] == trace_id
