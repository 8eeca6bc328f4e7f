from decimal import Decimal

import pytest

from gekko.domain.candles import INTERVALS, UnknownIntervalError, candles
from gekko.domain.exchange import INITIAL_CASH, make_fill
from gekko.domain.gamification import (
    FIRST_TRADE_BONUS,
    REGISTRATION_POINTS,
    TRADE_POINTS,
    award_for_registration,
    award_for_trade,
    level_for,
)
from gekko.domain.pnl import Holding, apply_fill, value
from gekko.domain.prices import UnknownSymbolError, price_at

D = Decimal


def test_average_cost_includes_buy_fees_and_sells_realize_pnl():
    h = Holding()
    h, r = apply_fill(h, make_fill("buy", D("1"), D("100")))  # cost 100.1
    h, r2 = apply_fill(h, make_fill("buy", D("1"), D("200")))  # cost 200.2
    assert (r, r2) == (0, 0)
    assert h.quantity == 2 and h.cost_basis == D("300.3")
    assert h.average_cost == D("150.15")
    h, realized = apply_fill(h, make_fill("sell", D("0.5"), D("300")))
    # proceeds 150 - fee 0.15 = 149.85; released cost 75.075
    assert realized == D("74.775")
    assert h.quantity == D("1.5") and h.cost_basis == D("225.225")
    assert h.realized_pnl == realized


def test_closing_a_position_releases_all_cost():
    h, _ = apply_fill(Holding(), make_fill("buy", D("3"), D("10")))
    h, realized = apply_fill(h, make_fill("sell", D("3"), D("9")))
    assert h.quantity == 0 and h.cost_basis == 0
    assert realized == D("27") - D("0.027") - D("30.03")
    assert h.average_cost is None


def test_equity_identity_holds_through_a_sequence_of_fills():
    cash, holding, realized_total = INITIAL_CASH, Holding(), D(0)
    fills = [
        make_fill("buy", D("0.7"), D("65000.12")),
        make_fill("buy", D("0.3"), D("64000.99")),
        make_fill("sell", D("0.45"), D("66000.01")),
        make_fill("buy", D("0.1"), D("63000")),
        make_fill("sell", D("0.2"), D("62000.5")),
    ]
    for fill in fills:
        holding, realized = apply_fill(holding, fill)
        cash += fill.cash_delta
        realized_total += realized
    market = D("67000.33")
    val = value(holding, market)
    equity = cash + val.market_value
    assert equity == INITIAL_CASH + realized_total + val.unrealized_pnl
    assert holding.realized_pnl == realized_total


def test_gamification_rules():
    assert award_for_registration().points == REGISTRATION_POINTS
    first = award_for_trade(0, D(0), D("12500"))
    assert first.points == TRADE_POINTS + FIRST_TRADE_BONUS + 12
    assert first.achievements == ["first_trade", "volume_10k"]
    later = award_for_trade(9, D("95000"), D("6000"))
    assert later.points == TRADE_POINTS + 6
    assert later.achievements == ["trades_10", "volume_100k"]
    assert award_for_trade(10, D("200000"), D("10")).achievements == []
    assert [level_for(p) for p in (0, 99, 100, 250)] == [1, 1, 2, 3]


def test_candles_are_ohlc_consistent_and_end_at_now():
    now = 1_700_000_000
    series = candles("btc-usd", "5m", 12, now=now)
    assert len(series) == 12
    assert series[-1].ts == now - now % 300
    assert [b.ts - a.ts for a, b in zip(series, series[1:], strict=False)] == [300] * 11
    for c in series:
        assert c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high
        assert c.volume > 0
    assert series[-1].close == price_at("BTC-USD", now)  # the forming candle closes at "now"
    assert series[0].open == price_at("BTC-USD", series[0].ts)


def test_candles_reject_bad_interval_and_symbol():
    with pytest.raises(UnknownIntervalError) as info:
        candles("AAPL", "7m", 5)
    assert all(i in str(info.value) for i in INTERVALS)
    with pytest.raises(UnknownSymbolError):
        candles("NOPE", "1m", 5)
