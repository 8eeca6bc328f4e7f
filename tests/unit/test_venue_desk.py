"""The trading service's venue desk: symbols found in the venue's own list by their assets, the
venue's trading rules checked before an order is sent, an adapter kept per linked key, and every
call counted in the venue's health."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry

from gekko.exchanges import desk as desk_module
from gekko.exchanges.base import ExchangeError, Mode, SymbolRules
from gekko.exchanges.desk import SymbolError, VenueDesk, check_order_rules, find_symbol
from gekko.exchanges.health import VenueHealth
from gekko.exchanges.venues import VENUES

BTCUSD = SymbolRules(
    "BTCUSD", "BTC", "USD", True, Decimal("0.01"), Decimal("0.00001"), Decimal("0.0001"),
    Decimal("10"),
)  # fmt: skip
ETHUSD = SymbolRules("ETHUSD", "ETH", "USD", False)
RULES = {"BTCUSD": BTCUSD, "ETHUSD": ETHUSD}


def open_key(desk: VenueDesk, key_id: str):
    """The adapter of an OANDA key linked as `key_id`."""
    return desk.exchange(key_id, VENUES["oanda"], desk.api_key_opener(VENUES["oanda"], OANDA_KEY))


def test_a_symbol_is_found_by_its_assets_or_by_the_venues_own_name():
    assert find_symbol(RULES, "BTC-USD") is BTCUSD
    assert find_symbol(RULES, "btcusd") is BTCUSD
    with pytest.raises(SymbolError, match="does not trade SOL-USD; it trades BTC-USD, ETH-USD"):
        find_symbol(RULES, "SOL-USD")
    with pytest.raises(SymbolError, match="trading in ETHUSD is halted"):
        find_symbol(RULES, "ETH-USD")


@pytest.mark.parametrize(
    ("quantity", "price", "message"),
    [
        ("0.00001", None, "the smallest quantity is 0.0001"),
        ("0.000105", None, "a multiple of 0.00001"),
        ("0.001", "65000.005", "price must be a multiple of 0.01"),
        ("0.0001", "65000", "worth at least 10"),
    ],
)
def test_the_venues_rules_are_checked_before_sending(quantity, price, message):
    with pytest.raises(SymbolError, match=message):
        check_order_rules(BTCUSD, Decimal(quantity), Decimal(price) if price else None)


def test_an_order_within_the_rules_passes():
    check_order_rules(BTCUSD, Decimal("0.00123"), Decimal("65000.01"))
    check_order_rules(BTCUSD, Decimal("0.0001"), None)  # a market order has no notional check


OANDA_KEY = {"api_token": "token", "account_id": "101-004-1-001"}


def test_one_adapter_per_key_kept_with_its_budget():
    async def run() -> None:
        desk = VenueDesk(Mode.SANDBOX, {"oanda": "http://127.0.0.1:9"}, VenueHealth())
        first = await open_key(desk, "key-1")
        assert await open_key(desk, "key-1") is first
        other = await open_key(desk, "key-2")
        assert other is not first and other.throttle is not first.throttle
        await desk.close()

    asyncio.run(run())


def test_an_adapter_let_go_is_closed_only_after_calls_it_may_be_making(monkeypatch):
    closed: list[object] = []

    async def run() -> None:
        monkeypatch.setattr(desk_module, "MAX_OPEN_KEYS", 1)
        clock = [100.0]
        desk = VenueDesk(Mode.SANDBOX, {}, VenueHealth(), clock=lambda: clock[0])
        first = await open_key(desk, "key-1")
        monkeypatch.setattr(first, "close", lambda: _note(closed, first))
        await open_key(desk, "key-2")  # key-1 let go
        assert closed == []
        clock[0] += desk_module.RETIRED_GRACE_S + 1
        await open_key(desk, "key-2")
        assert closed == [first]
        assert await open_key(desk, "key-1") is not first
        await desk.close()

    asyncio.run(run())


async def _note(closed: list[object], exchange: object) -> None:
    closed.append(exchange)


def test_a_call_cut_short_on_this_side_says_nothing_of_the_venue():
    async def run() -> CollectorRegistry:
        registry = CollectorRegistry()
        desk = VenueDesk(Mode.SANDBOX, {}, VenueHealth(registry))
        exchange = await open_key(desk, "key")

        async def cut_short() -> None:
            raise asyncio.CancelledError

        with pytest.raises(asyncio.CancelledError):
            await desk.call(exchange, cut_short)
        await desk.close()
        return registry

    registry = asyncio.run(run())
    for outcome in ("ok", "failed", "refused"):
        labels = {"venue": "oanda", "outcome": outcome}
        assert registry.get_sample_value("gekko_venue_requests_total", labels) is None


def test_each_call_is_counted_in_the_venues_health():
    async def run() -> CollectorRegistry:
        registry = CollectorRegistry()
        desk = VenueDesk(Mode.SANDBOX, {}, VenueHealth(registry))
        exchange = await open_key(desk, "key")

        async def fails() -> None:
            raise ExchangeError("oanda", "no answer", unsure=True)

        async def answers() -> str:
            return "ok"

        assert await desk.call(exchange, answers) == "ok"
        with pytest.raises(ExchangeError):
            await desk.call(exchange, fails)
        await desk.close()
        return registry

    registry = asyncio.run(run())
    for outcome in ("ok", "failed"):
        labels = {"venue": "oanda", "outcome": outcome}
        assert registry.get_sample_value("gekko_venue_requests_total", labels) == 1


def test_a_slow_symbol_list_is_read_once_and_kept_though_its_first_caller_gave_up():
    reads: list[int] = []

    async def run() -> None:
        desk = VenueDesk(Mode.SANDBOX, {}, VenueHealth())
        exchange = await open_key(desk, "key")

        async def slow_symbols() -> dict[str, SymbolRules]:
            reads.append(1)
            await asyncio.sleep(0.2)
            return RULES

        exchange.symbols = slow_symbols  # type: ignore[method-assign]
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await desk.symbol(exchange, "key", "BTC-USD")
        both = await asyncio.gather(
            desk.symbol(exchange, "key", "BTC-USD"), desk.symbol(exchange, "key", "BTCUSD")
        )
        assert both == [BTCUSD, BTCUSD]
        assert await desk.symbol(exchange, "key", "BTC-USD") is BTCUSD
        await desk.close()

    asyncio.run(run())
    assert reads == [1]
