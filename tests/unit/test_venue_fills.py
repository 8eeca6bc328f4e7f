"""Venue fills: each adapter reports an order's fills (quantity, value in the quote asset, fees by
asset) from the venue's documented payloads, and the portfolio books them with the fee in the
asset the venue charged it in."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from doubles.binanceus import BinanceDouble
from doubles.coinbase import CoinbaseDouble
from doubles.oanda import OandaDouble
from doubles.serve import run_against
from gekko.domain.venue_fills import Position, added_fill, apply, book, late_fees
from gekko.exchanges import binanceus, coinbase, oanda
from gekko.exchanges.base import ExchangeOrder, OrderRequest, OrderStatus
from gekko.services.portfolio import _feed_price, _feed_prices

# --- Binance.US ------------------------------------------------------------------------------

# The docs' "Response FULL" of POST /api/v3/order, verbatim.
BINANCE_FULL = {
    "symbol": "BTCUSDT",
    "orderId": 28,
    "orderListId": -1,
    "clientOrderId": "6gCrw2kRUAF9CvJDGP16IP",
    "transactTime": 1507725176595,
    "price": "0.00000000",
    "origQty": "10.00000000",
    "executedQty": "10.00000000",
    "cummulativeQuoteQty": "10.00000000",
    "status": "FILLED",
    "timeInForce": "GTC",
    "type": "MARKET",
    "side": "SELL",
    "fills": [
        {"price": "4000.00000000", "qty": "1.00000000", "commission": "4.00000000",
         "commissionAsset": "USDT", "tradeId": 56},
        {"price": "3999.00000000", "qty": "5.00000000", "commission": "19.99500000",
         "commissionAsset": "USDT", "tradeId": 57},
        {"price": "3998.00000000", "qty": "2.00000000", "commission": "7.99600000",
         "commissionAsset": "USDT", "tradeId": 58},
        {"price": "3997.00000000", "qty": "1.00000000", "commission": "3.99700000",
         "commissionAsset": "USDT", "tradeId": 59},
        {"price": "3995.00000000", "qty": "1.00000000", "commission": "3.99500000",
         "commissionAsset": "USDT", "tradeId": 60},
    ],
}  # fmt: skip
# The docs' answer of GET /api/v3/myTrades, verbatim.
BINANCE_MY_TRADES = [
    {"symbol": "BNBBTC", "id": 28457, "orderId": 100234, "orderListId": -1,
     "price": "4.00000100", "qty": "12.00000000", "quoteQty": "48.000012",
     "commission": "10.10000000", "commissionAsset": "BNB", "time": 1499865549590,
     "isBuyer": True, "isMaker": False, "isBestMatch": True},
]  # fmt: skip


def test_binance_fills_come_from_a_full_answers_fills_with_their_commissions():
    order = binanceus.order_from(BINANCE_FULL)
    assert order.filled_quantity == Decimal(10)
    # The fills' own prices, not the answer's cummulativeQuoteQty (10 in the docs' example).
    assert order.filled_value == Decimal("39983")
    assert order.average_price == Decimal("3998.3")
    assert order.fees == {"USDT": Decimal("39.98300000")}
    trades = binanceus.order_from(
        {**BINANCE_FULL, "symbol": "BNBBTC", "executedQty": "12"}, BINANCE_MY_TRADES
    )
    assert (trades.filled_quantity, trades.filled_value) == (Decimal(12), Decimal("48.000012"))
    assert trades.fees == {"BNB": Decimal("10.1")}
    # A RESULT answer has no fills: its totals, no fees.
    result = {k: v for k, v in BINANCE_FULL.items() if k != "fills"}
    assert binanceus.order_from(result).filled_value == Decimal(10)
    assert binanceus.order_from(result).fees == {}


def _binance(double: BinanceDouble, scenario):
    credentials = binanceus.Credentials(double.api_key, secret=double.secret)
    return run_against(double.app(), lambda url: binanceus.BinanceUS(credentials, url), scenario)


def test_binance_a_resting_order_filled_in_parts_is_read_with_its_trades():
    double = BinanceDouble(api_key="k", secret="s" * 40)
    limit = OrderRequest("gk-limit-1", "BTCUSD", "buy", "limit", Decimal("0.5"), Decimal("29000"))

    async def scenario(client: binanceus.BinanceUS):
        placed = await client.place_order(limit)
        double.fill("gk-limit-1", Decimal("0.2"), Decimal("29000"))
        double.fill("gk-limit-1", Decimal("0.1"), Decimal("28990"))
        part = await client.get_order("BTCUSD", "gk-limit-1")
        cancelled = await client.cancel_order("BTCUSD", "gk-limit-1")
        return placed, part, cancelled

    placed, part, cancelled = _binance(double, scenario)
    assert placed.filled_quantity == 0 and placed.fees == {}
    assert part.status is OrderStatus.PARTIALLY_FILLED
    assert part.filled_quantity == Decimal("0.3")
    assert part.filled_value == Decimal("8699.0")  # 0.2 x 29000 + 0.1 x 28990
    assert part.fees == {"BTC": Decimal("0.0003")}  # 0.1 % of the BTC received
    assert cancelled.status is OrderStatus.CANCELED
    assert (cancelled.filled_quantity, cancelled.fees) == (part.filled_quantity, part.fees)


def test_binance_a_market_order_reports_its_fills_at_once():
    double = BinanceDouble(api_key="k", secret="s" * 40, last_price=Decimal("30000"))
    sell = OrderRequest("gk-sell-1", "BTCUSD", "sell", "market", Decimal("0.1"))
    order = _binance(double, lambda client: client.place_order(sell))
    assert order.status is OrderStatus.FILLED
    assert (order.filled_quantity, order.average_price) == (Decimal("0.1"), Decimal(30000))
    assert order.fees == {"USD": Decimal("3.0")}  # a sell pays in the USD received


def test_binance_trades_lagging_the_order_are_taken_as_listed_and_asked_again():
    double = BinanceDouble(api_key="k", secret="s" * 40)
    limit = OrderRequest("gk-limit-2", "BTCUSD", "buy", "limit", Decimal("0.5"), Decimal("29000"))

    async def scenario(client: binanceus.BinanceUS):
        await client.place_order(limit)
        double.fill("gk-limit-2", Decimal("0.2"), Decimal("29000"))
        double.fill("gk-limit-2", Decimal("0.3"), Decimal("29000"))
        double.trades.pop()  # the order says filled, its last trade is not listed yet
        return await client.get_order("BTCUSD", "gk-limit-2")

    lagging = _binance(double, scenario)
    # The listed fill is taken; the order says it is not all there (asked again, no error).
    assert lagging.status is OrderStatus.FILLED and not lagging.fills_complete
    assert (lagging.filled_quantity, lagging.filled_value) == (Decimal("0.2"), Decimal(5800))


def test_binance_an_order_with_a_full_page_of_trades_is_read_from_the_first_one():
    double = BinanceDouble(api_key="k", secret="s" * 40)
    limit = OrderRequest("gk-many", "BTCUSD", "buy", "limit", Decimal("0.0025"), Decimal("29000"))

    async def scenario(client: binanceus.BinanceUS):
        await client.place_order(limit)
        for _ in range(25):
            double.fill("gk-many", Decimal("0.0001"), Decimal("29000"))
        binanceus.TRADES_PAGE, saved = 10, binanceus.TRADES_PAGE
        try:
            return await client.get_order("BTCUSD", "gk-many")
        finally:
            binanceus.TRADES_PAGE = saved

    order = _binance(double, scenario)
    assert order.fills_complete and order.filled_quantity == Decimal("0.0025")
    assert order.fees == {"BTC": Decimal("0.0000025")}


# --- Coinbase --------------------------------------------------------------------------------

# The fill fields of the docs' Order object (GET /orders/historical/{order_id}).
COINBASE_ORDER = {
    "order_id": "0000-000000-000000",
    "product_id": "BTC-USD",
    "side": "BUY",
    "client_order_id": "11111-000000-000000",
    "order_configuration": {
        "limit_limit_gtc": {"base_size": "0.001", "limit_price": "10000.00", "post_only": False}
    },
    "status": "FILLED",
    "filled_size": "0.001",
    "average_filled_price": "50",
    "number_of_fills": "2",
    "filled_value": "10000",
    "total_fees": "5.00",
}


def test_coinbase_fills_are_the_order_objects_totals_with_fees_in_the_quote_currency():
    order = coinbase.order_from(COINBASE_ORDER)
    assert (order.filled_quantity, order.filled_value) == (Decimal("0.001"), Decimal(10000))
    assert order.fees == {"USD": Decimal("5.00")}
    # Without filled_value, the average price times the size.
    no_value = coinbase.order_from({**COINBASE_ORDER, "filled_value": None})
    assert no_value.filled_value == Decimal("0.050")


def _coinbase(**settings) -> tuple[CoinbaseDouble, coinbase.Credentials]:
    """A Coinbase double and a CDP key it accepts."""
    key = ec.generate_private_key(ec.SECP256R1())
    double = CoinbaseDouble("organizations/o/apiKeys/k", key.public_key(), **settings)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    return double, coinbase.Credentials(double.key_name, pem)


def test_coinbase_a_resting_order_filled_in_part_is_read_with_its_fees():
    double, credentials = _coinbase()
    limit = OrderRequest("gk-cb-1", "BTC-USD", "buy", "limit", Decimal("0.02"), Decimal("30000"))

    async def scenario(client: coinbase.Coinbase):
        placed = await client.place_order(limit)
        double.fill(placed.venue_order_id, Decimal("0.01"), Decimal("29950"))
        return await client.get_order("BTC-USD", "gk-cb-1")

    part = run_against(double.app(), lambda url: coinbase.Coinbase(credentials, url), scenario)
    assert part.status is OrderStatus.PARTIALLY_FILLED
    assert (part.filled_quantity, part.average_price) == (Decimal("0.01"), Decimal(29950))
    assert part.fees == {"USD": Decimal("1.797")}  # 0.6 % of 299.50


# --- OANDA -----------------------------------------------------------------------------------


def _oanda(double: OandaDouble, scenario):
    credentials = oanda.Credentials(double.token, double.account_id)
    return run_against(double.app(), lambda url: oanda.Oanda(credentials, url), scenario)


def test_oanda_a_fill_is_its_transactions_units_at_its_vwap_and_commission_at_home():
    double = OandaDouble("t", "101-1", last_price="1.08500", commission="0.2500")
    buy = OrderRequest("gk-o-1", "EUR_USD", "buy", "market", Decimal(1000))
    limit = OrderRequest("gk-o-2", "EUR_USD", "sell", "limit", Decimal(400), Decimal("1.1"))

    async def scenario(client: oanda.Oanda):
        placed = await client.place_order(buy)
        resting = await client.place_order(limit)
        double.fill(resting.venue_order_id, "1.10010")
        return placed, await client.get_order("EUR_USD", "gk-o-2")

    placed, later = _oanda(double, scenario)
    assert (placed.filled_quantity, placed.average_price) == (Decimal(1000), Decimal("1.085"))
    # The account's home currency, asked of the account summary once.
    assert placed.fees == {"USD": Decimal("0.25")}
    assert later.status is OrderStatus.FILLED
    assert (later.filled_quantity, later.filled_value) == (Decimal(400), Decimal("440.04"))
    assert later.fees == {"USD": Decimal("0.25")}


def test_oanda_an_order_without_commission_has_no_fee_and_no_extra_call():
    double = OandaDouble("t", "101-1")
    buy = OrderRequest("gk-o-3", "EUR_USD", "buy", "market", Decimal(10))
    order = _oanda(double, lambda client: client.place_order(buy))
    assert order.fees == {} and order.filled_value == Decimal("11.0") and order.fills_complete
    assert double.summaries == 0


def test_oanda_a_fill_not_told_in_full_is_asked_again():
    double = OandaDouble("t", "101-1", commission="0.2500")
    buy = OrderRequest("gk-o-4", "EUR_USD", "buy", "market", Decimal(10))
    limit = OrderRequest("gk-o-5", "EUR_USD", "buy", "limit", Decimal(10), Decimal("1.05"))

    async def scenario(client: oanda.Oanda):
        double.failing_summaries = 1  # the commission's currency cannot be asked
        placed = await client.place_order(buy)
        resting = await client.place_order(limit)
        double.fill(resting.venue_order_id, "1.05000")
        del double.orders[resting.venue_order_id]["fillingTransactionID"]
        return placed, await client.get_order("EUR_USD", "gk-o-5")

    placed, unnamed = _oanda(double, scenario)
    # Placed and filled all the same; its fee is left out, to be asked for again.
    assert placed.status is OrderStatus.FILLED and placed.filled_quantity == 10
    assert placed.fees == {} and not placed.fills_complete
    # A filled order that does not name its fill: done, its fill to be asked for.
    assert unnamed.status is OrderStatus.FILLED and unnamed.filled_quantity == 0
    assert not unnamed.fills_complete


def test_coinbase_balances_follow_the_cursor_past_the_first_page():
    double, credentials = _coinbase(extra_wallets=300)
    found = run_against(
        double.app(), lambda url: coinbase.Coinbase(credentials, url), lambda c: c.balances()
    )
    assert len(found) == 301 and found[-1].asset == "C299"


# --- the portfolio's booking -----------------------------------------------------------------


def test_a_buy_charged_in_kind_holds_less_at_the_full_cost():
    fees = {"BTC": Decimal("0.0005")}
    booked = book("buy", Decimal("0.5"), Decimal(15000), fees, "BTC", "USD", fees_in_kind=True)
    assert (booked.quantity, booked.cash) == (Decimal("0.4995"), Decimal(-15000))
    assert booked.fee_value == Decimal("15.0")  # 0.0005 BTC at the fill's 30000
    held, _ = apply(Position(), booked)
    assert (held.quantity, held.cost_basis) == (Decimal("0.4995"), Decimal(15000))


def test_a_fee_in_the_base_currency_paid_from_the_balance_is_a_cost_not_units():
    # An OANDA account kept in EUR trading EUR_USD: its commission is EUR, from the balance.
    booked = book("buy", Decimal(10000), Decimal(11000), {"EUR": Decimal(1)}, "EUR", "USD")
    assert booked.quantity == Decimal(10000) and booked.cash == Decimal("-11001.1")
    assert booked.fee_value == Decimal("1.1")


def test_a_sell_charged_in_the_quote_asset_books_its_proceeds_less_the_fee():
    start = Position(Decimal(1), Decimal(30000))
    booked = book("sell", Decimal("0.5"), Decimal(16000), {"USD": Decimal(16)}, "BTC", "USD")
    held, realized = apply(start, booked)
    assert held.quantity == Decimal("0.5") and realized == Decimal(16000 - 16 - 15000)
    assert held.cost_basis == Decimal(15000)
    assert booked.fee_value == Decimal(16) and booked.other_fees == {}


def test_a_short_is_opened_and_covered_with_its_pnl():
    fee = {"USD": Decimal(1)}
    short, realized = apply(
        Position(), book("sell", Decimal(10000), Decimal(11000), fee, "EUR", "USD")
    )
    assert (short.quantity, short.cost_basis, realized) == (Decimal(-10000), Decimal(-10999), 0)
    assert short.average_price == Decimal("1.0999")
    covered, realized = apply(short, book("buy", Decimal(10000), Decimal(10900), fee, "EUR", "USD"))
    # Sold at 1.10, bought back at 1.09, a dollar of fees each way.
    assert (covered.quantity, covered.cost_basis, realized) == (0, 0, Decimal(98))


def test_a_closed_position_keeps_no_cost_and_a_fee_taking_the_whole_fill_is_refused():
    # A fee valued at a price of many digits: closing leaves no residue in the cost.
    bought, _ = apply(
        Position(), book("buy", Decimal(3), Decimal(10), {"EUR": Decimal(1)}, "EUR", "USD")
    )
    closed, _ = apply(bought, book("sell", Decimal(3), Decimal(11), {}, "EUR", "USD"))
    assert (closed.quantity, closed.cost_basis) == (0, 0)
    with pytest.raises(ValueError, match="takes all of"):
        book("buy", Decimal(1), Decimal(5), {"BTC": Decimal(1)}, "BTC", "USD", fees_in_kind=True)


def test_a_fill_larger_than_the_position_closes_it_and_opens_the_other_side():
    long = Position(Decimal(1000), Decimal(1100))
    flipped, realized = apply(long, book("sell", Decimal(1500), Decimal(1800), {}, "EUR", "USD"))
    assert realized == Decimal(100)  # 1000 sold at 1.20 that cost 1.10
    assert (flipped.quantity, flipped.cost_basis) == (Decimal(-500), Decimal(-600))
    assert flipped.realized_pnl == Decimal(100)


def test_a_fee_in_another_asset_is_kept_as_charged_and_late_fees_are_valued():
    booked = book("buy", Decimal(1), Decimal(100), {"BNB": Decimal("0.01")}, "LTC", "USD")
    assert booked.quantity == Decimal(1) and booked.fee_value == 0
    assert booked.other_fees == {"BNB": Decimal("0.01")}
    with pytest.raises(ValueError, match="positive"):
        book("buy", Decimal(0), Decimal(0), {}, "LTC", "USD")
    late = {"USD": Decimal(2), "LTC": Decimal("0.01"), "BNB": Decimal("0.5")}
    assert late_fees(late, "LTC", "USD", Decimal(100)) == (Decimal(3), {"BNB": Decimal("0.5")})


# --- what trading records of each answer -----------------------------------------------------


def _reported(filled: str, value: str, **fees: str) -> ExchangeOrder:
    return ExchangeOrder(
        venue="binanceus",
        symbol="BTCUSD",
        venue_order_id="1",
        client_order_id="gk1",
        status=OrderStatus.PARTIALLY_FILLED,
        side="buy",
        quantity=Decimal(1),
        filled_quantity=Decimal(filled),
        filled_value=Decimal(value),
        fees={asset: Decimal(amount) for asset, amount in fees.items()},
    )


def test_each_answer_adds_only_what_filled_since_the_last_one():
    first = added_fill(Decimal(0), Decimal(0), {}, _reported("0.2", "6000", BTC="0.0002"))
    assert first == (Decimal("0.2"), Decimal(6000), {"BTC": Decimal("0.0002")})
    # The next answer's totals, against what the first recorded.
    second = added_fill(
        Decimal("0.2"),
        Decimal(6000),
        {"BTC": Decimal("0.0002")},
        _reported("0.5", "15060", BTC="0.0005", BNB="0.01"),
    )
    assert second == (
        Decimal("0.3"),
        Decimal(9060),
        {"BTC": Decimal("0.0003"), "BNB": Decimal("0.01")},
    )
    # A stale answer (less filled, or as much) adds nothing, nor one without a value.
    assert added_fill(Decimal("0.5"), Decimal(15060), {}, _reported("0.2", "6000")) is None
    assert added_fill(Decimal("0.5"), Decimal(15060), {}, _reported("0.5", "15060")) is None
    assert added_fill(Decimal(0), Decimal(0), {}, _reported("0.2", "0")) is None
    # A fee the venue settled later comes alone, even with the value left out of the answer; a
    # fill recorded before values were (None) is added whole.
    late = added_fill(
        Decimal("0.5"), Decimal(15060), {"USD": Decimal(1)}, _reported("0.5", "15060", USD="3")
    )
    assert late == (Decimal(0), Decimal(0), {"USD": Decimal(2)})
    no_value = added_fill(
        Decimal("0.5"), Decimal(15060), {"USD": Decimal(1)}, _reported("0.5", "0", USD="3")
    )
    assert no_value == (Decimal(0), Decimal(0), {"USD": Decimal(2)})
    legacy = added_fill(Decimal("0.5"), None, {}, _reported("0.5", "15060", USD="3"))
    assert legacy == (Decimal("0.5"), Decimal(15060), {"USD": Decimal(3)})


def test_venue_feed_prices_are_read_in_one_round_trip_and_what_cannot_be_read_values_nothing():
    class Pipeline:
        def __init__(self, redis):
            self.redis, self.asked = redis, []

        def hmget(self, name, keys):
            self.asked.append((name, list(keys)))

        async def execute(self, raise_on_error=True):
            assert not raise_on_error  # one venue's bad key must not cost the others' prices
            self.redis.round_trips.append(self.asked)
            if isinstance(self.redis.answer, Exception):
                raise self.redis.answer
            return [
                self.redis.answer.get(name)
                if isinstance(self.redis.answer.get(name), Exception)
                else [self.redis.answer.get((name, k)) for k in keys]
                for name, keys in self.asked
            ]

    class Redis:
        def __init__(self, answer):
            self.answer, self.round_trips = answer, []

        def pipeline(self, transaction):
            return Pipeline(self)

    wanted = [("oanda", "EUR_USD"), ("oanda", "GBP_USD"), ("binanceus", "BTCUSD")]
    redis = Redis(
        {
            ("gekko:market:price:oanda", "EUR_USD"): b"1.15000 1765000000000",
            ("gekko:market:price:binanceus", "BTCUSD"): "65000.5 1765000001000",
            # An entry in no known form, or without its time: the last fill values it.
            ("gekko:market:price:oanda", "GBP_USD"): b"not-a-price 17650",
        }
    )
    assert asyncio.run(_feed_prices(redis, wanted)) == {
        ("oanda", "EUR_USD"): (Decimal("1.15000"), datetime.fromtimestamp(1765000000, UTC)),
        ("binanceus", "BTCUSD"): (Decimal("65000.5"), datetime.fromtimestamp(1765000001, UTC)),
    }
    assert redis.round_trips == [
        [
            ("gekko:market:price:oanda", ["EUR_USD", "GBP_USD"]),
            ("gekko:market:price:binanceus", ["BTCUSD"]),
        ]
    ]
    # Redis away, or no feed: every position is valued at its last fill.
    assert asyncio.run(_feed_prices(Redis(RedisConnectionError("refused")), wanted)) == {}
    assert asyncio.run(_feed_prices(Redis({}), wanted)) == {}
    assert asyncio.run(_feed_prices(Redis({}), [])) == {}
    # A venue's key that is not a hash (WRONGTYPE) values that venue's positions at their last
    # fill; the other venues keep their feed prices.
    redis.answer["gekko:market:price:oanda"] = ResponseError("WRONGTYPE")
    assert asyncio.run(_feed_prices(redis, wanted)) == {
        ("binanceus", "BTCUSD"): (Decimal("65000.5"), datetime.fromtimestamp(1765000001, UTC)),
    }
    assert _feed_price(b"1.15000") is None
