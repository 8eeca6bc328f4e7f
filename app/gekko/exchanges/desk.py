"""The trading service's side of the venues: an adapter per linked key, each behind its own
request budget (a venue limits each credential), the venues' symbols, and every call timed and
counted in the venue's health.

Symbols are asked as `BASE-QUOTE` (BTC-USD, EUR-USD), the platform's own form, and found in the
venue's own list by their assets (Binance.US BTCUSD, Coinbase BTC-USD, OANDA EUR_USD); the
venue's own name is accepted too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

from gekko.exchanges.base import Exchange, ExchangeError, Mode, SymbolRules
from gekko.exchanges.credentials import as_settings
from gekko.exchanges.health import VenueHealth
from gekko.exchanges.throttle import Throttle, ThrottledExchange
from gekko.exchanges.venues import Venue

T = TypeVar("T")

# Venue symbol lists are read again after this long (a venue adds or halts symbols rarely).
SYMBOLS_TTL_S = 600.0
# Adapters kept open (one per linked key in use); the least recently used is let go beyond it,
# and closed once a call it may still be making has ended (a placement takes 2 minutes at most).
MAX_OPEN_KEYS = 256
RETIRED_GRACE_S = 180.0


class SymbolError(ValueError):
    """The venue does not trade the symbol, or the order breaks one of its trading rules."""


def find_symbol(rules: Mapping[str, SymbolRules], asked: str) -> SymbolRules:
    wanted = asked.strip().upper()
    if wanted in rules:
        found = rules[wanted]
    else:
        base, _, quote = wanted.partition("-")
        found = next(
            (r for r in rules.values() if (r.base_asset, r.quote_asset) == (base, quote)), None
        )
    if found is None:
        some = ", ".join(sorted(f"{r.base_asset}-{r.quote_asset}" for r in rules.values())[:8])
        raise SymbolError(f"the venue does not trade {asked}; it trades {some or 'nothing'}")
    if not found.trading:
        raise SymbolError(f"trading in {found.symbol} is halted on the venue")
    return found


def check_order_rules(rules: SymbolRules, quantity: Decimal, price: Decimal | None) -> None:
    """The venue's own filters, checked before anything is sent (a refusal costs budget)."""
    if rules.min_quantity is not None and quantity < rules.min_quantity:
        raise SymbolError(f"{rules.symbol}: the smallest quantity is {rules.min_quantity}")
    if rules.step_size and quantity % rules.step_size:
        raise SymbolError(f"{rules.symbol}: quantity must be a multiple of {rules.step_size}")
    if price is None:
        return
    if rules.tick_size and price % rules.tick_size:
        raise SymbolError(f"{rules.symbol}: price must be a multiple of {rules.tick_size}")
    if rules.min_notional is not None and price * quantity < rules.min_notional:
        raise SymbolError(f"{rules.symbol}: an order must be worth at least {rules.min_notional}")


@dataclass
class _Symbols:
    rules: dict[str, SymbolRules]
    read_at: float


class VenueDesk:
    def __init__(
        self,
        mode: Mode,
        base_urls: Mapping[str, str],
        health: VenueHealth,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mode = mode
        self.base_urls = dict(base_urls)
        self.health = health
        self.clock = clock
        # A symbol list being read, per key: shared by the callers, and finished even when
        # they stop waiting (a slow venue's list is still kept for the next order).
        self._reading: dict[object, asyncio.Future[dict[str, SymbolRules]]] = {}
        self._open: OrderedDict[object, ThrottledExchange] = OrderedDict()
        # Adapters let go of, closed once no call can still be using them.
        self._retired: list[tuple[float, ThrottledExchange]] = []
        # By key: a venue may list symbols per account (OANDA does).
        self._symbols: dict[object, _Symbols] = {}

    async def exchange(
        self, key_id: object, venue: Venue, opener: Callable[[], Exchange]
    ) -> ThrottledExchange:
        """The adapter of a linked key, opened once and kept (with its request budget)."""
        await self._close_retired()
        exchange = self._open.get(key_id)
        if exchange is not None:
            self._open.move_to_end(key_id)
            return exchange
        exchange = self._open[key_id] = ThrottledExchange(opener(), Throttle.for_venue(venue.name))
        while len(self._open) > MAX_OPEN_KEYS:
            oldest_key, oldest = self._open.popitem(last=False)
            self._symbols.pop(oldest_key, None)
            self._retired.append((self.clock(), oldest))
        return exchange

    async def _close_retired(self) -> None:
        now = self.clock()
        while self._retired and now - self._retired[0][0] > RETIRED_GRACE_S:
            _, exchange = self._retired.pop(0)
            await exchange.close()

    async def call(self, exchange: ThrottledExchange, call: Callable[[], Awaitable[T]]) -> T:
        """Make a call, counted in the venue's health (its outcome, latency and headroom). A
        call cut short on this side (cancelled, a bug) says nothing of the venue."""
        started = time.perf_counter()
        try:
            result = await call()
        except ExchangeError as exc:
            if not exc.credential:
                self._record(exchange, exc, started)
            raise
        self._record(exchange, None, started)
        return result

    def _record(
        self, exchange: ThrottledExchange, error: ExchangeError | None, started: float
    ) -> None:
        self.health.record(
            exchange.venue, error, time.perf_counter() - started, headroom=_headroom(exchange)
        )

    async def symbol(self, exchange: ThrottledExchange, key_id: object, asked: str) -> SymbolRules:
        cached = self._symbols.get(key_id)
        if cached is not None and self.clock() - cached.read_at <= SYMBOLS_TTL_S:
            return find_symbol(cached.rules, asked)
        reading = self._reading.get(key_id)
        if reading is None:
            reading = self._reading[key_id] = asyncio.ensure_future(self._read(exchange, key_id))
            reading.add_done_callback(lambda done: self._read_done(key_id, done))
        return find_symbol(await asyncio.shield(reading), asked)

    async def _read(self, exchange: ThrottledExchange, key_id: object) -> dict[str, SymbolRules]:
        rules = await self.call(exchange, exchange.symbols)
        self._symbols[key_id] = _Symbols(rules, self.clock())
        return rules

    def _read_done(self, key_id: object, done: asyncio.Future[dict[str, SymbolRules]]) -> None:
        self._reading.pop(key_id, None)
        if not done.cancelled():
            done.exception()  # retrieved: a failed read is its waiters' error, or nobody's

    async def probe_degraded(self) -> None:
        """A degraded venue nobody sends orders to is asked for its symbols once per cool-off,
        with a key already open for it, so that it is seen again when it recovers."""
        for venue in self.health.degraded():
            exchange = next((e for e in self._open.values() if e.venue == venue), None)
            if exchange is None or self.health.retry_after_s(venue) is not None:
                continue
            with contextlib.suppress(ExchangeError):
                await self.call(exchange, exchange.symbols)

    def forget(self, key_id: object) -> None:
        """A key removed or linked anew: its adapter is let go (closed after the grace)."""
        exchange = self._open.pop(key_id, None)
        self._symbols.pop(key_id, None)
        if exchange is not None:
            self._retired.append((self.clock(), exchange))

    def api_key_opener(self, venue: Venue, fields: Mapping[str, str]) -> Callable[[], Exchange]:
        """How the adapter of an API key a user linked is opened."""
        return lambda: venue.open(self.mode, as_settings(venue, fields, self.base_urls))

    async def close(self) -> None:
        while self._open:
            _, exchange = self._open.popitem()
            await exchange.close()
        while self._retired:
            _, exchange = self._retired.pop()
            await exchange.close()


def _headroom(exchange: ThrottledExchange) -> float | None:
    used = getattr(exchange.exchange, "used_weight_1m", None)
    if used is None:
        return None
    budget = exchange.throttle.requests.amount
    return max(0.0, (budget - used) / budget)
