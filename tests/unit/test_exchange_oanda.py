"""The OANDA v20 adapter against a double on loopback that checks the bearer token and the
account, names orders by their clientExtensions id, and answers with the documented payloads."""

from __future__ import annotations

from decimal import Decimal

import pytest

from doubles.oanda import OandaDouble
from doubles.serve import run_against
from gekko.exchanges.base import ExchangeError, OrderRequest, OrderStatus
from gekko.exchanges.oanda import LIVE_URL, PRACTICE_URL, Credentials, Oanda, order_body

TOKEN, ACCOUNT = "0123456789abcdef-0123456789abcdef", "101-004-1234567-001"
SELL = OrderRequest("gekko-s1", "EUR_USD", "sell", "limit", Decimal(100), Decimal("1.2"))


def test_hosts_and_order_bodies_follow_the_docs():
    assert PRACTICE_URL == "https://api-fxpractice.oanda.com"
    assert LIVE_URL == "https://api-fxtrade.oanda.com"
    assert order_body(SELL) == {
        "order": {
            "type": "LIMIT",
            "instrument": "EUR_USD",
            "units": "-100",
            "timeInForce": "GTC",
            "positionFill": "DEFAULT",
            "clientExtensions": {"id": "gekko-s1", "tag": "gekko"},
            "price": "1.2",
        }
    }
    market = order_body(OrderRequest("gekko-b1", "EUR_USD", "buy", "market", Decimal(10)))
    assert market["order"]["units"] == "10" and market["order"]["timeInForce"] == "FOK"
    assert "price" not in market["order"]
    assert TOKEN not in repr(Credentials(TOKEN, ACCOUNT))


def _run(double: OandaDouble, scenario, credentials: Credentials | None = None):
    credentials = credentials or Credentials(double.token, double.account_id)
    return run_against(double.app(), lambda url: Oanda(credentials, url), scenario)


def test_orders_by_client_id_balances_and_instruments():
    double = OandaDouble(TOKEN, ACCOUNT)

    async def scenario(client: Oanda):
        bought = await client.place_order(
            OrderRequest("gekko-b1", "EUR_USD", "buy", "market", Decimal(10))
        )
        resting = await client.place_order(SELL)
        found = await client.get_order("EUR_USD", "gekko-s1")
        canceled = await client.cancel_order("EUR_USD", "gekko-s1")
        missing = await client.get_order("EUR_USD", "never-sent")
        return (
            bought,
            resting,
            found,
            canceled,
            missing,
            await client.balances(),
            await client.symbols(),
        )

    bought, resting, found, canceled, missing, balances, rules = _run(double, scenario)
    assert bought.status is OrderStatus.FILLED and bought.filled_quantity == Decimal(10)
    assert (resting.side, resting.quantity, resting.status) == (
        "sell",
        Decimal(100),
        OrderStatus.NEW,
    )
    assert found.venue_order_id == resting.venue_order_id and found.client_order_id == "gekko-s1"
    assert canceled.status is OrderStatus.CANCELED and missing is None
    assert balances[0].asset == "USD" and balances[0].free == Decimal("99000.0000")
    assert balances[0].locked == Decimal("1000.0000")
    eur = rules["EUR_USD"]
    assert (eur.base_asset, eur.quote_asset, eur.tick_size) == ("EUR", "USD", Decimal("0.00001"))


def test_a_lost_answer_is_settled_by_the_client_id():
    double = OandaDouble(TOKEN, ACCOUNT, drop_answers=1)

    async def scenario(client: Oanda):
        return await client.place_order(SELL)

    placed = _run(double, scenario)
    assert placed.client_order_id == "gekko-s1" and double.posted == 1


def test_a_client_id_used_twice_is_rejected():
    double = OandaDouble(TOKEN, ACCOUNT)

    async def scenario(client: Oanda):
        await client.place_order(SELL)
        with pytest.raises(ExchangeError) as refused:
            await client.place_order(SELL)
        return refused.value

    refused = _run(double, scenario)
    assert refused.http_status == 400 and refused.code == "CLIENT_ORDER_ID_ALREADY_EXISTS"


def test_a_wrong_token_is_explained():
    double = OandaDouble(TOKEN, ACCOUNT)

    async def scenario(client: Oanda):
        with pytest.raises(ExchangeError) as refused:
            await client.balances()
        return refused.value

    refused = _run(double, scenario, Credentials("practice-token-on-live", ACCOUNT))
    assert refused.http_status == 401 and "practice tokens work on the practice host" in str(
        refused
    )
