"""Each credential's request budget on its venue (EC-NET-002): bursts wait for room instead of
failing, and a venue that answers 429 (or Binance's 418) is left alone for its Retry-After.

The budgets are the venues' documented limits (Binance.US: request weight 1200 per minute and
orders 100 per 10 s; OANDA: 120 requests per second; Coinbase: 30 requests per second on its
private endpoints), counted in a moving window by the `limits` library, in this process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from gekko.exchanges.base import (
    Balance,
    Exchange,
    ExchangeError,
    ExchangeOrder,
    OrderRequest,
    SymbolRules,
)

T = TypeVar("T")

# The documented budget of each venue, per credential: (all requests, orders).
BUDGETS: dict[str, tuple[str, str | None]] = {
    "binanceus": ("1200/minute", "100/10 seconds"),
    "coinbase": ("30/second", None),
    "oanda": ("120/second", None),
}
# A call waits this long for room at most, then fails (the caller's own deadline is shorter).
DEFAULT_MAX_WAIT_S = 30.0
# Binance.US: past this share of the minute's request weight (its header), wait for the next.
WEIGHT_PAUSE_SHARE = 0.9


@dataclass
class Throttle:
    """One credential's budgets on one venue, and the pause a 429 asked for."""

    venue: str
    requests: RateLimitItem
    orders: RateLimitItem | None = None
    max_wait_s: float = DEFAULT_MAX_WAIT_S
    paused_until: float = 0.0  # monotonic
    waited_s: float = 0.0  # total time calls spent waiting for room (a metric)
    _limiter: MovingWindowRateLimiter = field(
        default_factory=lambda: MovingWindowRateLimiter(MemoryStorage())
    )

    @classmethod
    def for_venue(cls, venue: str, max_wait_s: float = DEFAULT_MAX_WAIT_S) -> Throttle:
        requests, orders = BUDGETS[venue]
        return cls(venue, parse(requests), parse(orders) if orders else None, max_wait_s)

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    async def acquire(self, *, order: bool = False) -> None:
        """Waits until the venue is not paused and both budgets have room, then takes it."""
        deadline = time.monotonic() + self.max_wait_s
        started = time.monotonic()
        items = [self.requests] + ([self.orders] if order and self.orders else [])
        while True:
            now = time.monotonic()
            if now < self.paused_until:
                # A pause past the deadline fails at once, saying when the venue takes calls.
                await self._sleep_until(self.paused_until, deadline)
                continue
            full = [item for item in items if not await self._limiter.test(item, self.venue)]
            if not full:
                # Taken only if every hit counts: test() and hit() are two awaits, and another
                # call may have taken the room between them (a hit that did count while a
                # later one did not leaves a slot unused: on the safe side).
                taken = [await self._limiter.hit(item, self.venue) for item in items]
                if all(taken):
                    self.waited_s += time.monotonic() - started
                    return
                full = [item for item, ok in zip(items, taken, strict=True) if not ok]
            stats = [await self._limiter.get_window_stats(item, self.venue) for item in full]
            # reset_time is wall-clock seconds: when the oldest request leaves the window.
            wait = max(0.01, max(s.reset_time for s in stats) - time.time())
            await self._sleep_until(time.monotonic() + wait, deadline)

    async def _sleep_until(self, until: float, deadline: float) -> None:
        now = time.monotonic()
        if until > deadline or now >= deadline:
            raise ExchangeError(
                self.venue,
                f"no room in the request budget within {self.max_wait_s:.0f} s",
                retry_after_s=max(1.0, until - now),
                explanation="the venue's rate limit is the bottleneck: fewer or slower calls",
            )
        await asyncio.sleep(max(0.0, until - time.monotonic()))


class ThrottledExchange:
    """An adapter behind its credential's throttle: every call waits for room; a 429 or 418
    (the venue refused the request, so nothing happened) pauses the venue for Retry-After and
    the call is made again. A call whose outcome is unsure is never made again here.

    Binance.US counts request weight, not requests: when its X-MBX-USED-WEIGHT-1M header
    shows the minute's budget nearly spent, the venue is paused until the next minute."""

    def __init__(self, exchange: Exchange, throttle: Throttle, *, attempts: int = 5) -> None:
        self.exchange = exchange
        self.throttle = throttle
        self.attempts = attempts
        self.venue = exchange.venue
        self.backoffs = 0  # 429/418 answers met (a metric)

    async def _call(self, call: Callable[[], Awaitable[T]], *, order: bool = False) -> T:
        for attempt in range(1, self.attempts + 1):
            await self.throttle.acquire(order=order)
            try:
                result = await call()
            except ExchangeError as exc:
                if exc.unsure or exc.http_status not in (418, 429) or attempt == self.attempts:
                    raise
                self.backoffs += 1
                # Retry-After, or a doubling pause when the venue gave none.
                self.throttle.pause(exc.retry_after_s or min(60.0, 2.0**attempt))
                continue
            finally:
                self._mind_the_weight()
            return result
        raise ExchangeError(self.venue, "no attempt made")  # attempts < 1

    def _mind_the_weight(self) -> None:
        used = getattr(self.exchange, "used_weight_1m", None)
        if used is not None and used >= WEIGHT_PAUSE_SHARE * self.throttle.requests.amount:
            self.throttle.pause(60.0 - time.time() % 60.0)

    async def place_order(self, order: OrderRequest) -> ExchangeOrder:
        return await self._call(lambda: self.exchange.place_order(order), order=True)

    async def get_order(self, symbol: str, client_order_id: str) -> ExchangeOrder | None:
        return await self._call(lambda: self.exchange.get_order(symbol, client_order_id))

    async def cancel_order(self, symbol: str, client_order_id: str) -> ExchangeOrder:
        return await self._call(lambda: self.exchange.cancel_order(symbol, client_order_id))

    async def balances(self) -> list[Balance]:
        return await self._call(self.exchange.balances)

    async def symbols(self) -> dict[str, SymbolRules]:
        return await self._call(self.exchange.symbols)

    async def close(self) -> None:
        await self.exchange.close()
