"""Venue fills in the running stack, against the OANDA practice double: an order's fills carry
the venue's price and fees, each new fill reaches the portfolio once as a position per venue and
mode (cost, realized P&L, fees), valued at the venue feed's last price or, without a feed, at
the last fill's; a fill the venue has not told in full is asked for again, even once the order is
done; two portfolio instances booking a symbol's first fills at once lose neither; and a trader
reads their balances at the venue."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid

import asyncpg
import httpx
import pytest
import redis

from gekko import events as ev
from gekko.services.portfolio import apply_venue_fill

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
        assert not read["fills_pending"]
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
    now_ms = int(time.time() * 1000)
    prices.hset(PRICE_HASH, "EUR_USD", f"1.15000 {now_ms}")
    try:
        fed = position(stack, headers, fills=2)
        assert (fed["priced_by"], fed["market_value"]) == ("feed", pytest.approx(690))
        # A feed that stopped long ago values nothing.
        prices.hset(PRICE_HASH, "EUR_USD", f"1.15000 {now_ms - 3_600_000}")
        assert position(stack, headers, fills=2)["priced_by"] == "last_fill"
        # A fill is dated when trading recorded it, not when the portfolio booked it: booked late
        # (a consumer running behind), it still gives way to a feed price newer than the fill.
        user_id = httpx.get(f"{stack.gateway}{VENUE_PORTFOLIO}", headers=headers).json()["user_id"]
        (booked,) = stack.postgres.fetch(
            "UPDATE portfolio.venue_positions SET updated_at = now() + interval '1 hour' "
            "WHERE user_id = $1 AND symbol = 'EUR_USD' RETURNING last_fill_at",
            user_id,
        )
        assert abs(booked["last_fill_at"].timestamp() - time.time()) < 60, booked
        after_fill_ms = int(booked["last_fill_at"].timestamp() * 1000) + 1
        prices.hset(PRICE_HASH, "EUR_USD", f"1.15000 {after_fill_ms}")
        assert position(stack, headers, fills=2)["priced_by"] == "feed"
        # A portfolio of the previous release (a rolling deploy, a rollback) books a fill without
        # the column: the booking's time dates it, and the older feed price gives way again.
        (rebooked,) = stack.postgres.fetch(
            "UPDATE portfolio.venue_positions SET fills = fills + 1 "
            "WHERE user_id = $1 AND symbol = 'EUR_USD' RETURNING last_fill_at",
            user_id,
        )
        assert rebooked["last_fill_at"].timestamp() * 1000 > after_fill_ms, rebooked
        assert position(stack, headers, fills=3)["priced_by"] == "last_fill"
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


def test_a_fill_not_told_in_full_is_asked_for_until_it_is(stack, oanda):
    headers = trader_with_oanda_key(stack)
    limit = {**MARKET_BUY, "quantity": "300", "type": "limit", "limit_price": "1.05"}
    resting = httpx.post(f"{stack.gateway}{ORDERS}", json=limit, headers=headers, timeout=15)
    assert resting.status_code == 201, resting.text
    venue_order = oanda.orders[resting.json()["venue_order_id"]]
    oanda.fill(venue_order["id"], "1.05000")
    filling = venue_order.pop("fillingTransactionID")  # the venue does not name its fill yet
    location = f"{stack.gateway}{ORDERS}/{resting.json()['id']}"
    read = httpx.get(location, headers=headers, timeout=10).json()
    assert (read["status"], read["filled_quantity"], read["fills_pending"]) == ("filled", 0, True)
    venue_order["fillingTransactionID"] = filling
    # The background pass asks for it again (a done order included) and books it once.
    held = position(stack, headers, fills=1)
    assert (held["quantity"], held["cost_basis"]) == (300, pytest.approx(315))
    done = httpx.get(location, headers=headers, timeout=10).json()
    assert (done["filled_quantity"], done["average_price"], done["fills_pending"]) == (
        300, 1.05, False
    )  # fmt: skip


def _fill_event(user_id: int, side: str, quantity: str, value: str) -> ev.Event:
    payload = {
        "order_id": 1, "user_id": user_id, "venue": "oanda", "mode": "sandbox",
        "symbol": "EUR_USD", "base_asset": "EUR", "quote_asset": "USD", "side": side,
        "quantity": quantity, "value": value, "fees": {}, "fees_in_kind": False,
        "filled_quantity": quantity,
    }  # fmt: skip
    return ev.Event(str(uuid.uuid4()), ev.VENUE_ORDER_FILLED, "2026-12-06T00:00:00+00:00", payload)


def test_two_instances_booking_a_symbols_first_fills_at_once_lose_neither(stack):
    user_id = 900_000_000 + secrets.randbelow(1_000_000)
    first, second = (
        _fill_event(user_id, "buy", "100", "110"),
        _fill_event(user_id, "buy", "50", "60"),
    )

    async def race() -> bool:
        # Two connections, as two portfolio instances have. The first books its fill and has
        # not committed yet when the second starts on the same (new) position.
        one = await asyncpg.connect(stack.postgres.url)
        two = await asyncpg.connect(stack.postgres.url)
        try:
            booking = one.transaction()
            await booking.start()
            await apply_venue_fill(one, first)

            async def book_second() -> None:
                async with two.transaction():
                    await apply_venue_fill(two, second)

            waiting = asyncio.create_task(book_second())
            await asyncio.sleep(0.5)
            waited = not waiting.done()
            await booking.commit()
            await waiting
            return waited
        finally:
            await one.close()
            await two.close()

    assert asyncio.run(race()), "the second booking did not wait for the first"
    (row,) = stack.postgres.fetch(
        "SELECT quantity, cost_basis, fills FROM portfolio.venue_positions WHERE user_id = $1",
        user_id,
    )
    assert (row["quantity"], row["cost_basis"], row["fills"]) == (150, 170, 2)
