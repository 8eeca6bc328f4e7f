from decimal import Decimal

import pytest

from gekko.domain.exchange import (
    OrderRejectedError,
    buy_reservation,
    check_order,
    fee_for,
    is_marketable,
    make_fill,
    money,
    to_decimal,
)

D = Decimal


def test_fill_notional_fee_and_cash_deltas():
    buy = make_fill("buy", D("0.5"), D("65000.12"))
    assert buy.notional == D("32500.06")
    assert buy.fee == D("32.50006")  # 10 bps
    assert buy.cash_delta == D("-32532.56006")
    assert buy.position_delta == D("0.5")
    sell = make_fill("sell", D("0.5"), D("65000.12"))
    assert sell.cash_delta == D("32467.55994")
    assert sell.position_delta == D("-0.5")


def test_money_is_exact_where_floats_are_not():
    # 0.1 + 0.2 style errors must not reach balances: three fills of 0.1 @ 0.3 are 0.09 exactly.
    fills = [make_fill("buy", D("0.1"), D("0.3")) for _ in range(3)]
    assert sum(f.notional for f in fills) == D("0.09")
    assert to_decimal(190.12) == D("190.12")


def test_fee_rounds_half_up_to_the_money_quantum():
    assert fee_for(D("0.000005")) == D("0.00000001")  # 5e-9 rounds up, not to even
    assert fee_for(D("0")) == D("0")
    assert money(D("1.000000005")) == D("1.00000000")  # notional rounds half-even


def test_tiny_and_huge_quantities_keep_precision():
    tiny = make_fill("buy", D("0.0000000001"), D("65000"))
    assert tiny.notional == D("0.0000065")
    huge = make_fill("buy", D("999999999.9999999999"), D("99999.99"))
    assert huge.notional == D("99999989999999.99999000")  # exact product, then 1e-8


@pytest.mark.parametrize(
    ("side", "limit", "market", "expected"),
    [
        ("buy", "100", "99.99", True),
        ("buy", "100", "100", True),
        ("buy", "100", "100.01", False),
        ("sell", "100", "100.01", True),
        ("sell", "100", "100", True),
        ("sell", "100", "99.99", False),
    ],
)
def test_limit_marketability(side, limit, market, expected):
    assert is_marketable(side, D(limit), D(market)) is expected


def test_buy_needs_cash_including_fee():
    fill = make_fill("buy", D("1"), D("1000"))  # costs 1001
    check_order("buy", "X", fill, cash=D("1001"), held=D(0))
    with pytest.raises(OrderRejectedError) as info:
        check_order("buy", "X", fill, cash=D("1000.99999999"), held=D(0))
    assert info.value.code == "insufficient-funds"
    assert "1001" in info.value.detail and "1000.99999999" in info.value.detail


def test_sell_needs_position():
    fill = make_fill("sell", D("2"), D("10"))
    check_order("sell", "AAPL", fill, cash=D(0), held=D("2"))
    with pytest.raises(OrderRejectedError) as info:
        check_order("sell", "AAPL", fill, cash=D("1e9"), held=D("1.5"))
    assert info.value.code == "insufficient-position"
    assert "AAPL" in info.value.detail and "1.5" in info.value.detail


def test_buy_reservation_covers_any_fill_at_or_below_limit():
    reserved = buy_reservation(D("3"), D("100"))
    assert reserved == D("300.3")
    for price in ("100", "99.5", "1"):
        fill = make_fill("buy", D("3"), D(price))
        assert reserved + fill.cash_delta >= 0  # refund is never negative
