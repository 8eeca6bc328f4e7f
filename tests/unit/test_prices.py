import pytest

from gekko.domain.prices import (
    BASE_PRICES,
    UnknownSymbolError,
    normalize_symbol,
    price_at,
    quote,
)


def test_price_is_deterministic_per_symbol_and_second():
    assert price_at("BTC-USD", 1_700_000_000) == price_at("BTC-USD", 1_700_000_000)
    assert price_at("BTC-USD", 1_700_000_000) != price_at("ETH-USD", 1_700_000_000)


def test_price_moves_over_time_but_stays_near_base():
    series = [price_at("AAPL", 1_700_000_000 + 60 * i) for i in range(200)]
    assert len(set(series)) > 100
    base = BASE_PRICES["AAPL"]
    assert all(0.7 * base < p < 1.3 * base for p in series)


def test_quote_matches_price_at_for_the_same_second():
    q = quote("sol-usd", now=1_700_000_123.9)
    assert (q.symbol, q.ts) == ("SOL-USD", 1_700_000_123)
    assert q.price == price_at("SOL-USD", 1_700_000_123)


@pytest.mark.parametrize("symbol", ["DOGE-USD", "", "btc"])
def test_unknown_symbol_raises_with_supported_list(symbol):
    with pytest.raises(UnknownSymbolError) as info:
        price_at(symbol, 0)
    assert "BTC-USD" in str(info.value)


@pytest.mark.parametrize("symbol", ["BTC-USD", "ETH-USD", "SOL-USD", "AAPL", "MSFT"])
def test_each_tradable_symbol_is_quoted_whatever_its_case(symbol):
    assert normalize_symbol(f" {symbol.lower()} ") == symbol
    assert quote(symbol.lower(), now=1_700_000_000).symbol == symbol
