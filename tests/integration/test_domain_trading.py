"""The paper exchange through the gateway: fills, fees, checks, limit orders, status, history."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import asyncpg
import httpx
import pytest

from gekko.domain.prices import price_at, quote
from gekko.services.trading import match_open_orders

from .conftest import Stack, new_user

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


def _execute(stack: Stack, auth: dict[str, str], **order) -> httpx.Response:
    return httpx.post(f"{stack.gateway}/api/v1/trading/execute", json=order, headers=auth)


def test_market_buy_fills_at_market_price_with_fee_and_moves_cash(stack):
    auth, user_id = new_user(stack.gateway)
    before = time.time()
    resp = _execute(stack, auth, symbol="ETH-USD", side="buy", quantity="1.5")
    after = time.time()
    assert resp.status_code == 201, resp.text
    order = resp.json()
    assert order["status"] == "filled" and order["type"] == "market"
    # Fills at the shared feed's price for the second the order executed in.
    candidates = {price_at("ETH-USD", int(t)) for t in (before, after)}
    assert order["price"] in candidates
    price = Decimal(str(order["price"]))
    notional = (price * Decimal("1.5")).quantize(Decimal("0.00000001"))
    fee = (notional / 1000).quantize(Decimal("0.00000001"))
    assert Decimal(str(order["notional"])) == notional
    assert Decimal(str(order["fee"])) == fee

    account = httpx.get(f"{stack.gateway}/api/v1/trading/account", headers=auth).json()
    assert Decimal(str(account["cash_available"])) == Decimal(100_000) - notional - fee
    assert account["positions"] == [{"symbol": "ETH-USD", "quantity": 1.5}]

    status = httpx.get(f"{stack.gateway}/api/v1/trading/orders/{order['id']}", headers=auth)
    assert status.status_code == 200 and status.json() == order


def test_insufficient_funds_and_position_are_clear_422_problems(stack):
    auth, user_id = new_user(stack.gateway)
    broke = _execute(stack, auth, symbol="BTC-USD", side="buy", quantity=10)  # ~650k USD
    assert broke.status_code == 422
    assert broke.headers["content-type"].startswith(PROBLEM)
    assert "insufficient funds" in broke.json()["detail"]
    assert broke.json()["type"].endswith("/insufficient-funds")

    short = _execute(stack, auth, symbol="AAPL", side="sell", quantity=1)
    assert short.status_code == 422
    assert "insufficient position" in short.json()["detail"]

    assert _execute(stack, auth, symbol="AAPL", side="buy", quantity=2).status_code == 201
    too_many = _execute(stack, auth, symbol="AAPL", side="sell", quantity="2.0000000001")
    assert too_many.status_code == 422 and "available quantity is 2" in too_many.json()["detail"]
    ok = _execute(stack, auth, symbol="AAPL", side="sell", quantity=2)
    assert ok.status_code == 201 and ok.json()["side"] == "sell"
    rows = stack.postgres.fetch(
        "SELECT count(*) AS n FROM trading.orders WHERE user_id = $1", user_id
    )
    assert rows[0]["n"] == 2  # rejected orders are not stored


@pytest.mark.parametrize(
    ("order", "needle"),
    [
        ({"symbol": "BTC-USD", "side": "buy", "quantity": 1, "type": "limit"}, "limit_price"),
        (
            {"symbol": "BTC-USD", "side": "buy", "quantity": 1, "limit_price": 5},
            "only allowed on limit",
        ),
        ({"symbol": "BTC-USD", "side": "buy", "quantity": 0}, "quantity"),
        ({"symbol": "BTC-USD", "side": "buy", "quantity": "1e12"}, "quantity"),
        ({"symbol": "BTC-USD", "side": "buy", "quantity": "0.00000000001"}, "decimal"),
        ({"symbol": "BTC-USD", "side": "buy", "quantity": "abc"}, "quantity"),
        ({"symbol": "BTC-USD", "side": "buy", "quantity": 1, "type": "stop"}, "type"),
        ({"symbol": "BTC-USD", "side": "buy", "quantity": 1, "limitPrice": 5}, "limitPrice"),
        ({"symbol": "NOPE", "side": "buy", "quantity": 1}, "unknown symbol"),
    ],
)
def test_bad_orders_are_422_problems(stack, order, needle):
    auth, _ = new_user(stack.gateway)
    resp = _execute(stack, auth, **order)
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body = resp.json()
    assert needle.lower() in (body["detail"] + str(body.get("errors", ""))).lower()


def test_limit_orders_rest_reserve_cancel_and_fill_when_marketable(stack):
    auth, user_id = new_user(stack.gateway)
    market = Decimal(str(quote("SOL-USD").price))
    low = (market * Decimal("0.5")).quantize(Decimal("0.01"))
    resting = _execute(stack, auth, symbol="SOL-USD", side="buy", quantity=10, type="limit",
                       limit_price=str(low))  # fmt: skip
    assert resting.status_code == 201, resting.text
    order = resting.json()
    assert order["status"] == "open" and order["price"] is None
    account = httpx.get(f"{stack.gateway}/api/v1/trading/account", headers=auth).json()
    reserved = low * 10 * Decimal("1.001")
    assert Decimal(str(account["cash_reserved"])) == reserved
    assert Decimal(str(account["cash_available"])) == Decimal(100_000) - reserved

    open_orders = httpx.get(
        f"{stack.gateway}/api/v1/trading/orders", params={"status": "open"}, headers=auth
    ).json()["orders"]
    assert [o["id"] for o in open_orders] == [order["id"]]

    cancel = httpx.delete(f"{stack.gateway}/api/v1/trading/orders/{order['id']}", headers=auth)
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    account = httpx.get(f"{stack.gateway}/api/v1/trading/account", headers=auth).json()
    assert account["cash_available"] == 100_000 and account["cash_reserved"] == 0

    # A limit above the market is marketable: it fills at once, at the (better) market price.
    high = (market * Decimal("1.5")).quantize(Decimal("0.01"))
    crossed = _execute(stack, auth, symbol="SOL-USD", side="buy", quantity=1, type="limit",
                       limit_price=str(high))  # fmt: skip
    assert crossed.status_code == 201 and crossed.json()["status"] == "filled"
    assert crossed.json()["price"] < float(high)

    filled = httpx.delete(
        f"{stack.gateway}/api/v1/trading/orders/{crossed.json()['id']}", headers=auth
    )
    assert filled.status_code == 409 and filled.headers["content-type"].startswith(PROBLEM)
    other_auth, _ = new_user(stack.gateway)
    hidden = httpx.get(f"{stack.gateway}/api/v1/trading/orders/{order['id']}", headers=other_auth)
    assert hidden.status_code == 404


def test_matcher_fills_a_resting_limit_when_the_price_crosses(stack):
    auth, user_id = new_user(stack.gateway)
    now = int(time.time())
    limit = Decimal(str(price_at("MSFT", now))) * Decimal("0.999")
    limit = limit.quantize(Decimal("0.01"))
    resp = _execute(stack, auth, symbol="MSFT", side="buy", quantity=3, type="limit",
                    limit_price=str(limit))  # fmt: skip
    assert resp.status_code == 201, resp.text
    if resp.json()["status"] == "filled":
        pytest.skip("the market dropped 0.1% within the second; nothing left to match")
    # Find a future second at which the feed trades through the limit, and match "then". The
    # daily octave can climb for a whole day after a low, so look up to 30 days ahead.
    crossing = next(
        (t for t in range(now, now + 30 * 86_400, 10) if price_at("MSFT", t) <= limit), None
    )
    assert crossing is not None, f"MSFT never trades at or below {limit} in the next 30 days"

    async def match() -> int:
        pool = await asyncpg.create_pool(stack.postgres.url, min_size=1, max_size=2)
        try:
            return await match_open_orders(pool, now=crossing)
        finally:
            await pool.close()

    asyncio.run(match())
    order = httpx.get(
        f"{stack.gateway}/api/v1/trading/orders/{resp.json()['id']}", headers=auth
    ).json()
    assert order["status"] == "filled"
    assert order["price"] <= float(limit)
    account = httpx.get(f"{stack.gateway}/api/v1/trading/account", headers=auth).json()
    assert account["cash_reserved"] == 0
    spent = Decimal(str(order["notional"])) + Decimal(str(order["fee"]))
    assert Decimal(str(account["cash_available"])) == Decimal(100_000) - spent


def test_concurrent_orders_cannot_overspend(stack):
    """Ten parallel buys of ~23k USD each on a 100k account: exactly four can fill."""
    auth, user_id = new_user(stack.gateway)
    qty = (Decimal(23_000) / Decimal(str(quote("BTC-USD").price))).quantize(Decimal("0.0001"))

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=15) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        f"{stack.gateway}/api/v1/trading/execute",
                        json={"symbol": "BTC-USD", "side": "buy", "quantity": str(qty)},
                        headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
                    )
                    for _ in range(10)
                )
            )
        return sorted(r.status_code for r in responses)

    statuses = asyncio.run(burst())
    assert statuses.count(201) == 4 and statuses.count(422) == 6, statuses
    cash = stack.postgres.fetch("SELECT cash FROM trading.accounts WHERE user_id = $1", user_id)
    assert cash[0]["cash"] >= 0


def test_candles_and_quotes(stack):
    resp = httpx.get(
        f"{stack.gateway}/api/v1/market-data/candles/btc-usd", params={"interval": "5m", "limit": 3}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["symbol"] == "BTC-USD" and body["interval"] == "5m" and len(body["candles"]) == 3
    for c in body["candles"]:
        assert c["low"] <= c["open"] <= c["high"] and c["low"] <= c["close"] <= c["high"]
    bad_interval = httpx.get(
        f"{stack.gateway}/api/v1/market-data/candles/BTC-USD", params={"interval": "7m"}
    )
    assert bad_interval.status_code == 422 and "1m" in bad_interval.json()["detail"]
    bad_symbol = httpx.get(f"{stack.gateway}/api/v1/market-data/candles/NOPE")
    assert bad_symbol.status_code == 404
    assert bad_symbol.headers["content-type"].startswith(PROBLEM)
    bad_limit = httpx.get(
        f"{stack.gateway}/api/v1/market-data/candles/BTC-USD", params={"limit": 0}
    )
    assert bad_limit.status_code == 422


def test_order_history_pages_by_id_without_gaps_or_repeats(stack):
    auth, _user_id = new_user(stack.gateway)
    placed = []
    for _ in range(5):
        resp = _execute(stack, auth, symbol="ETH-USD", side="buy", quantity="0.01")
        assert resp.status_code == 201, resp.text
        placed.append(resp.json()["id"])
    url = f"{stack.gateway}/api/v1/trading/orders"
    first = httpx.get(url, params={"limit": 2}, headers=auth).json()["orders"]
    # An order placed between two pages must not shift the next page.
    assert _execute(stack, auth, symbol="ETH-USD", side="buy", quantity="0.01").status_code == 201
    seen = [o["id"] for o in first]
    for _page in range(5):  # 5 orders in pages of 2, and an empty one to end
        page = httpx.get(url, params={"limit": 2, "before": seen[-1]}, headers=auth).json()
        if not page["orders"]:
            break
        seen += [o["id"] for o in page["orders"]]
    assert seen == sorted(placed, reverse=True)
    bad = httpx.get(url, params={"before": "yesterday"}, headers=auth)
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
