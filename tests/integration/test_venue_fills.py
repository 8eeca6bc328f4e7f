"""Venue fills in the running stack, against the OANDA practice double: an order's fills carry
the venue's price and fees, each new fill reaches the portfolio once as a position per venue
account (cost, realized P&L, fees), valued at the venue feed's last price or, without a feed, at
the last fill's; and a trader reads their balances at the venue."""

from __future__ import annotations

import httpx
import pytest
import redis

from .conftest import eventually
from .test_venue_orders import KEYS, MARKET_BUY, ORDERS, trader_with_oanda_key

pytestmark = pytest.mark.integration

VENUE_PORTFOLIO = "/api/v1/portfolio/venues"
BALANCES = "/api/v1/trading/venue-balances"
PRICE_HASH = "gekko:market:price:oanda"


def position(stack, headers, fills: int) -> dict:
    """The trader's EUR_USD position at OANDA once `fills` fills are booked."""

    def booked():
        answer = httpx.get(f"{stack.gateway}{VENUE_PORTFOLIO}", headers=headers, timeout=5)
        assert answer.status_code == 200, answer.text
        found = answer.json()["positions"]
        assert len(found) <= 1, found
        return found[0] if found and found[0]["fills"] == fills else None

    return eventually(booked, 15, f"{fills} fills in the venue portfolio")


def test_fills_reach_the_portfolio_once_with_the_venues_price_and_fees(stack, oanda):
    headers = trader_with_oanda_key(stack)
    prices = redis.Redis.from_url(stack.env["GEKKO_REDIS_URL"], decode_responses=True)
    prices.hdel(PRICE_HASH, "EUR_USD")  # no feed: valued at the last fill
    oanda.commission = "0.2500"
    try:
        bought = httpx.post(
            f"{stack.gateway}{ORDERS}", json={**MARKET_BUY, "quantity": "1000"}, headers=headers
        )
        assert bought.status_code == 201, bought.text
        assert bought.json()["average_price"] == 1.1
        assert bought.json()["fees"] == {"USD": 0.25}
        assert bought.json()["filled_value"] == 1100.0
        first = position(stack, headers, fills=1)
        assert (first["quantity"], first["cost_basis"]) == (1000, 1100.25)

        # A resting sell fills later at the venue: read, it brings its price and fee.
        limit = {**MARKET_BUY, "side": "sell", "quantity": "400", "type": "limit"}
        resting = httpx.post(
            f"{stack.gateway}{ORDERS}", json={**limit, "limit_price": "1.2"}, headers=headers
        )
        assert resting.status_code == 201 and resting.json()["status"] == "open", resting.text
        assert resting.json()["average_price"] is None
        oanda.fill(resting.json()["venue_order_id"], "1.20000")
        location = f"{stack.gateway}{ORDERS}/{resting.json()['id']}"
        read = httpx.get(location, headers=headers, timeout=10).json()
        assert (read["status"], read["average_price"], read["fees"]) == (
            "filled", 1.2, {"USD": 0.25}
        )  # fmt: skip
    finally:
        oanda.commission = "0.0000"

    held = position(stack, headers, fills=2)
    # 400 of 1000 sold: 400/1000 of the 1100.25 cost released; 480 received less 0.25.
    assert held["quantity"] == 600 and held["cost_basis"] == pytest.approx(660.15)
    assert held["realized_pnl"] == pytest.approx(480 - 0.25 - 440.10)
    assert held["fees_paid"] == pytest.approx(0.5) and held["other_fees"] == {}
    assert (held["base_asset"], held["quote_asset"], held["mode"]) == ("EUR", "USD", "sandbox")
    assert (held["priced_by"], held["market_price"]) == ("last_fill", 1.2)
    assert held["unrealized_pnl"] == pytest.approx(720 - 660.15)

    # Read again: the venue reports nothing new, so nothing is booked twice.
    assert httpx.get(location, headers=headers, timeout=10).json()["status"] == "filled"
    (row,) = stack.postgres.fetch(
        "SELECT count(*) AS n FROM trading.outbox WHERE type = 'venue_order.filled' "
        "AND payload->>'order_id' = ANY($1::text[])",
        [str(bought.json()["id"]), str(read["id"])],
    )
    assert row["n"] == 2

    # With the venue's market feed running, its last price values the position.
    prices.hset(PRICE_HASH, "EUR_USD", "1.15000")
    try:
        fed = position(stack, headers, fills=2)
        assert (fed["priced_by"], fed["market_value"]) == ("feed", pytest.approx(690))
    finally:
        prices.hdel(PRICE_HASH, "EUR_USD")
        prices.close()


def test_a_trader_reads_their_balances_at_the_venue(stack, oanda):
    headers = trader_with_oanda_key(stack)
    answer = httpx.get(f"{stack.gateway}{BALANCES}/oanda", headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["balances"] == [{"asset": "USD", "free": 99000.0, "locked": 1000.0}]
    assert answer.json()["mode"] == "sandbox"
    # No key for that venue, and a venue that does not exist.
    none = httpx.get(f"{stack.gateway}{BALANCES}/coinbase", headers=headers, timeout=10)
    assert none.status_code == 409 and none.json()["type"].endswith("no-venue-key")
    assert "POST " + KEYS in none.json()["detail"]
    unknown = httpx.get(f"{stack.gateway}{BALANCES}/kraken", headers=headers, timeout=10)
    assert unknown.status_code == 422
