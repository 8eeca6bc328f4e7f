"""Each credential's request budget: bursts wait for room instead of failing, a 429 storm
pauses the venue for its Retry-After, and no order is lost or placed twice through it."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest
from aiohttp.test_utils import TestServer
from limits import parse

from doubles.binanceus import BinanceDouble
from gekko.exchanges.base import ExchangeError, OrderRequest
from gekko.exchanges.binanceus import BinanceUS, Credentials
from gekko.exchanges.throttle import BUDGETS, Throttle, ThrottledExchange


def test_the_documented_budgets():
    assert BUDGETS["binanceus"] == ("1200/minute", "100/10 seconds")
    assert BUDGETS["oanda"] == ("120/second", None)
    throttle = Throttle.for_venue("binanceus")
    assert (throttle.requests.amount, throttle.orders.amount) == (1200, 100)


def test_a_burst_waits_for_room_instead_of_failing():
    throttle = Throttle("test", parse("3/second"))

    async def burst():
        started = time.monotonic()
        await asyncio.gather(*(throttle.acquire() for _ in range(7)))
        return time.monotonic() - started

    took = asyncio.run(burst())
    # 7 calls through 3 a second: the last ones waited for the window to move on.
    assert took >= 1.0 and throttle.waited_s > 0


def test_a_call_that_cannot_get_room_in_time_fails_clearly():
    throttle = Throttle("test", parse("1/minute"), max_wait_s=0.2)

    async def two():
        await throttle.acquire()
        await throttle.acquire()

    with pytest.raises(ExchangeError, match="no room in the request budget") as failed:
        asyncio.run(two())
    # When room comes: the minute's window moving on, not the 0.2 s waited.
    assert 55 < failed.value.retry_after_s <= 60


def test_a_pause_longer_than_the_wait_fails_at_once_saying_when_calls_resume():
    throttle = Throttle("test", parse("100/second"), max_wait_s=5)
    throttle.pause(40)
    started = time.monotonic()
    with pytest.raises(ExchangeError, match="no room") as failed:
        asyncio.run(throttle.acquire())
    assert time.monotonic() - started < 1
    assert 39 < failed.value.retry_after_s <= 40


def test_a_429_storm_loses_and_doubles_no_order():
    secret = "s" * 64
    double = BinanceDouble(api_key="k", secret=secret, refuse_next=6)

    async def storm():
        server = TestServer(double.app(), host="127.0.0.1")
        await server.start_server()
        exchange = ThrottledExchange(
            BinanceUS(Credentials("k", secret=secret), str(server.make_url("")).rstrip("/")),
            Throttle.for_venue("binanceus"),
        )
        orders = [
            OrderRequest(f"storm-{i}", "BTCUSD", "buy", "limit", Decimal(1), Decimal(100 + i))
            for i in range(10)
        ]
        try:
            placed = await asyncio.gather(*(exchange.place_order(o) for o in orders))
        finally:
            await exchange.close()
            await server.close()
        return placed, exchange

    placed, exchange = asyncio.run(storm())
    assert sorted(p.client_order_id for p in placed) == sorted(f"storm-{i}" for i in range(10))
    # Each order reached the venue once; the refused attempts were paused, then sent again.
    assert double.posted == 10 and len(double.orders) == 10
    assert exchange.backoffs >= 6 and exchange.throttle.paused_until > 0


class _Venue:
    """An adapter stand-in: answers with what `outcomes` says, in turn."""

    venue = "binanceus"

    def __init__(self, *outcomes, used_weight=None):
        self.outcomes = list(outcomes)
        self.calls = 0
        self.used_weight_1m = used_weight

    async def balances(self):
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def close(self):
        pass


def test_an_unsure_outcome_is_never_tried_again_even_after_a_429():
    venue = _Venue(ExchangeError("binanceus", "lost", http_status=429, unsure=True), [])
    throttled = ThrottledExchange(venue, Throttle.for_venue("binanceus"))
    with pytest.raises(ExchangeError):
        asyncio.run(throttled.balances())
    assert venue.calls == 1


def test_a_nearly_spent_minute_of_binance_weight_pauses_until_the_next():
    venue = _Venue([], used_weight=1150)
    throttle = Throttle.for_venue("binanceus")
    assert asyncio.run(ThrottledExchange(venue, throttle).balances()) == []
    assert throttle.paused_until > time.monotonic()
    calm = Throttle.for_venue("binanceus")
    asyncio.run(ThrottledExchange(_Venue([], used_weight=100), calm).balances())
    assert calm.paused_until == 0.0
