"""Real-time market data from the venues (FR-API-002): one reconnecting feed per venue.

A feed runs sessions: connect, subscribe, read. A session ends when the venue closes it, when
it goes quiet past its heartbeat, when a sequence gap shows lost messages, or before the venue's
own connection age limit; the feed then reconnects after a jittered back-off (reset once a
session has delivered) and resubscribes. Missed trades are fetched again where the venue allows
it (Binance.US: aggregate trades from the last id seen), and every event is delivered at least
once, duplicates dropped by trade id, to a sink: Redis Streams, `gekko:market:<venue>`.

- Binance.US: wss://stream.binance.us:9443, combined `<symbol>@aggTrade` streams; the server
  pings every 3 minutes and drops a connection after 24 h; aggregate trade ids are consecutive
  per symbol, so a jump is a gap, filled from GET /api/v3/aggTrades?fromId=.
- Coinbase Advanced Trade: wss://advanced-trade-ws.coinbase.com, the `market_trades` and
  `heartbeats` channels subscribed within 5 s of connecting; `sequence_num` grows by one per
  message on a connection, so a jump is a gap: reconnect, and the snapshot refills.
- OANDA v20: the HTTP pricing stream (one JSON object per line), a HEARTBEAT every 5 s.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import aiohttp
import orjson

log = logging.getLogger("gekko.exchanges.streams")

BINANCEUS_WS = "wss://stream.binance.us:9443"
COINBASE_WS = "wss://advanced-trade-ws.coinbase.com"
OANDA_STREAM_PRACTICE = "https://stream-fxpractice.oanda.com"
OANDA_STREAM_LIVE = "https://stream-fxtrade.oanda.com"
STREAM_PREFIX = "gekko:market:"
STREAM_MAXLEN = 100_000


@dataclass(frozen=True)
class MarketEvent:
    venue: str
    symbol: str
    kind: str  # "trade" or "price"
    event_id: str  # the venue's trade id, or the price's time: duplicates share it
    price: Decimal
    quantity: Decimal | None
    venue_time_ms: int | None  # when the venue says it happened
    received_ms: int  # when this host read it

    def fields(self) -> dict[str, str]:
        """As XADD takes it."""
        out = {
            "venue": self.venue,
            "symbol": self.symbol,
            "kind": self.kind,
            "id": self.event_id,
            "price": format(self.price, "f"),
            "received_ms": str(self.received_ms),
        }
        if self.quantity is not None:
            out["quantity"] = format(self.quantity, "f")
        if self.venue_time_ms is not None:
            out["venue_time_ms"] = str(self.venue_time_ms)
        return out


Sink = Callable[[MarketEvent], Awaitable[None]]


class StreamEnded(Exception):
    """A session ended and the feed should reconnect (quiet, closed, a gap, or its age)."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Seen:
    """The last few thousand event ids per symbol: a replay after a reconnect is dropped."""

    def __init__(self, size: int = 5000) -> None:
        self.size = size
        self.ids: OrderedDict[tuple[str, str], None] = OrderedDict()

    def seen(self, symbol: str, event_id: str) -> bool:
        return (symbol, event_id) in self.ids

    def add(self, symbol: str, event_id: str) -> None:
        self.ids[(symbol, event_id)] = None
        if len(self.ids) > self.size:
            self.ids.popitem(last=False)


@dataclass
class FeedStats:
    sessions: int = 0
    reconnects: int = 0
    gaps: int = 0
    backfilled: int = 0
    delivered: int = 0
    duplicates: int = 0
    last_reason: str = ""
    last_event_ms: int | None = None  # when the last event was delivered
    lost: int = 0  # missed events too many to refill (a long outage)


class Session(Protocol):
    async def __call__(self, deliver: Sink) -> None: ...


@dataclass
class Feed:
    """Runs `session` again and again until stopped, with full-jitter exponential back-off
    between sessions (base * 2^n, capped), reset after a session that delivered."""

    venue: str
    session: Session
    sink: Sink
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    stats: FeedStats = field(default_factory=FeedStats)
    _seen: _Seen = field(default_factory=_Seen)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def deliver(self, event: MarketEvent) -> None:
        """To the sink, once: an event counts as delivered only when the sink took it (a
        sink that fails ends the session, and the event comes again after the reconnect)."""
        if self._seen.seen(event.symbol, event.event_id):
            self.stats.duplicates += 1
            return
        await self.sink(event)
        self._seen.add(event.symbol, event.event_id)
        self.stats.delivered += 1
        self.stats.last_event_ms = now_ms()

    def stop(self) -> None:
        self._stop.set()

    async def _session_until_stopped(self) -> bool:
        """Runs one session; False if the feed was stopped meanwhile (the session cancelled).
        Both tasks end with it, however it ends (a cancelled feed closes its connection)."""
        session = asyncio.ensure_future(self.session(self.deliver))
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({session, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (session, stopped):
                if not task.done():
                    task.cancel()
            await asyncio.gather(session, stopped, return_exceptions=True)
        if session.cancelled():
            return False
        session.result()  # raises what ended the session
        return True

    async def run(self, max_sessions: int | None = None) -> None:
        failures = 0
        while not self._stop.is_set():
            if max_sessions is not None and self.stats.sessions >= max_sessions:
                return
            self.stats.sessions += 1
            delivered_before = self.stats.delivered
            try:
                if not await self._session_until_stopped():
                    return
                reason = "session ended"
            except (StreamEnded, aiohttp.ClientError, TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # noqa: BLE001 - a bad message or a sink outage: reconnect
                reason = f"{type(exc).__name__}: {exc}"
                log.warning("%s feed session failed: %s", self.venue, reason)
            self.stats.last_reason = reason
            if self._stop.is_set():
                return
            failures = 0 if self.stats.delivered > delivered_before else failures + 1
            cap = min(self.backoff_max_s, self.backoff_base_s * 2**failures)
            pause = random.uniform(0, cap)  # noqa: S311 - jitter, not a secret
            log.info("%s feed reconnects in %.1f s (%s)", self.venue, pause, reason)
            self.stats.reconnects += 1
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=pause)
            except TimeoutError:
                pass


# --- Binance.US --------------------------------------------------------------------------------


@dataclass
class BinanceUSTrades:
    """Aggregate trades of `symbols` (e.g. BTCUSD) from Binance.US's combined streams."""

    symbols: Sequence[str]
    ws_url: str = BINANCEUS_WS
    rest_url: str = "https://api.binance.us"
    # Client pings (aiohttp heartbeat): a connection that stops answering is dropped.
    heartbeat_s: float = 30.0
    # Binance.US closes a connection after 24 h: reconnect a little before.
    max_age_s: float = 24 * 3600 - 300
    stats: FeedStats | None = None
    last_id: dict[str, int] = field(default_factory=dict)
    # A gap longer than this (an outage of hours) is counted lost, not refilled page by page
    # (1000 trades a request, each weighing against the host's request budget).
    max_backfill: int = 10_000

    async def __call__(self, deliver: Sink) -> None:
        streams = "/".join(f"{s.lower()}@aggTrade" for s in self.symbols)
        opened = time.monotonic()
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(
                f"{self.ws_url}/stream?streams={streams}", heartbeat=self.heartbeat_s
            ) as ws,
        ):
            await self._catch_up(http, deliver)
            while True:
                left = self.max_age_s - (time.monotonic() - opened)
                if left <= 0:
                    raise StreamEnded("connection age limit: reconnecting before the venue does")
                try:
                    message = await ws.receive(timeout=left)
                except TimeoutError:
                    continue
                if message.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    raise StreamEnded(f"websocket {message.type.name.lower()}")
                data = orjson.loads(message.data).get("data") or {}
                if data.get("e") == "aggTrade":
                    await self._trade(http, data, deliver)

    async def _catch_up(self, http: aiohttp.ClientSession, deliver: Sink) -> None:
        """Once connected, the trades since the last one delivered (this feed's, or the previous
        publisher's), without waiting for the next trade to show the gap: a quiet symbol is
        complete too. What the stream sends meanwhile waits, and its replays are dropped."""
        for symbol, last in list(self.last_id.items()):
            missed = await self._aggregate_trades(
                http, symbol, last + 1, last + 1 + self.max_backfill
            )
            for trade in missed:
                await self._emit(trade, symbol, deliver)
                if self.stats is not None:
                    self.stats.backfilled += 1

    async def _trade(self, http: aiohttp.ClientSession, data: dict, deliver: Sink) -> None:
        symbol, trade_id = data["s"], int(data["a"])
        last = self.last_id.get(symbol)
        if last is not None and trade_id - last - 1 > self.max_backfill:
            log.warning("%s: %d trades missed, too many to refill", symbol, trade_id - last - 1)
            if self.stats is not None:
                self.stats.gaps += 1
                self.stats.lost += trade_id - last - 1
            self.last_id[symbol] = last = trade_id - 1
        if last is not None and trade_id > last + 1:
            # Missed trades (a gap, or a reconnect): fetch them before this one.
            if self.stats is not None:
                self.stats.gaps += 1
            for missed in await self._aggregate_trades(http, symbol, last + 1, trade_id):
                await self._emit(missed, symbol, deliver)
                if self.stats is not None:
                    self.stats.backfilled += 1
        await self._emit(data, symbol, deliver)

    async def _emit(self, trade: dict, symbol: str, deliver: Sink) -> None:
        trade_id = int(trade["a"])
        if trade_id <= self.last_id.get(symbol, -1):
            return
        await deliver(
            MarketEvent(
                venue="binanceus",
                symbol=symbol,
                kind="trade",
                event_id=str(trade_id),
                price=Decimal(trade["p"]),
                quantity=Decimal(trade["q"]),
                venue_time_ms=int(trade["T"]),
                received_ms=now_ms(),
            )
        )
        # Only once delivered: a failed delivery is fetched again after the reconnect.
        self.last_id[symbol] = trade_id

    async def _aggregate_trades(
        self, http: aiohttp.ClientSession, symbol: str, from_id: int, before_id: int
    ) -> list[dict]:
        """GET /api/v3/aggTrades?symbol=&fromId=&limit= (public), up to `before_id`."""
        found: list[dict] = []
        while from_id < before_id:
            limit = min(1000, before_id - from_id)
            async with http.get(
                f"{self.rest_url}/api/v3/aggTrades",
                params={"symbol": symbol, "fromId": str(from_id), "limit": str(limit)},
            ) as resp:
                if resp.status != 200:
                    raise StreamEnded(f"backfill of {symbol} answered {resp.status}")
                page = await resp.json(loads=orjson.loads)
            full = len(page) >= limit
            page = [t for t in page if from_id <= int(t["a"]) < before_id]
            if not page:
                break
            found.extend(page)
            from_id = int(page[-1]["a"]) + 1
            if not full:  # the venue has no more yet
                break
        return found


# --- Coinbase Advanced Trade -------------------------------------------------------------------


@dataclass
class CoinbaseTrades:
    """Trades of `product_ids` (e.g. BTC-USD) from the Advanced Trade WebSocket."""

    product_ids: Sequence[str]
    ws_url: str = COINBASE_WS
    # A JWT (no `uri` claim) for authenticated subscriptions; market data needs none.
    jwt_factory: Callable[[], str] | None = None
    # Heartbeats come every second: this long without any message ends the session.
    quiet_s: float = 10.0
    stats: FeedStats | None = None

    def _subscription(self, channel: str, products: Sequence[str]) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "subscribe", "channel": channel}
        if products:
            message["product_ids"] = list(products)
        if self.jwt_factory is not None:
            message["jwt"] = self.jwt_factory()
        return message

    async def __call__(self, deliver: Sink) -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(self.ws_url) as ws:
            # Within 5 s of connecting, or the venue closes the connection.
            for channel, products in (("heartbeats", []), ("market_trades", self.product_ids)):
                await ws.send_str(orjson.dumps(self._subscription(channel, products)).decode())
            expected: int | None = None
            while True:
                try:
                    message = await ws.receive(timeout=self.quiet_s)
                except TimeoutError:
                    raise StreamEnded(f"no message for {self.quiet_s:.0f} s") from None
                if message.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    raise StreamEnded(f"websocket {message.type.name.lower()}")
                data = orjson.loads(message.data)
                sequence = data.get("sequence_num")
                if sequence is not None:
                    if expected is not None and sequence != expected:
                        if self.stats is not None:
                            self.stats.gaps += 1
                        raise StreamEnded(f"sequence gap: {sequence} after {expected - 1}")
                    expected = sequence + 1
                if data.get("channel") == "market_trades":
                    for event in data.get("events", []):
                        for trade in event.get("trades", []):
                            await deliver(_coinbase_trade(trade))


def rfc3339_ms(stamp: str) -> int:
    """Milliseconds since the epoch of an RFC 3339 UTC time, nanoseconds allowed (Python
    reads microseconds at most)."""
    head, _, fraction = stamp.rstrip("Z").partition(".")
    return int(datetime.fromisoformat(f"{head}.{(fraction or '0')[:6]}+00:00").timestamp() * 1000)


def _coinbase_trade(trade: dict) -> MarketEvent:
    stamp = trade.get("time")
    return MarketEvent(
        venue="coinbase",
        symbol=trade["product_id"],
        kind="trade",
        event_id=str(trade["trade_id"]),
        price=Decimal(trade["price"]),
        quantity=Decimal(trade["size"]),
        venue_time_ms=rfc3339_ms(stamp) if stamp else None,
        received_ms=now_ms(),
    )


# --- OANDA v20 -------------------------------------------------------------------------------


@dataclass
class OandaPrices:
    """Prices of `instruments` (e.g. EUR_USD) from OANDA's HTTP pricing stream."""

    account_id: str
    token: str = field(repr=False)
    instruments: Sequence[str]
    stream_url: str = OANDA_STREAM_PRACTICE
    # HEARTBEATs come every 5 s: this long without a line ends the session.
    quiet_s: float = 10.0

    async def __call__(self, deliver: Sink) -> None:
        url = f"{self.stream_url}/v3/accounts/{self.account_id}/pricing/stream"
        headers = {"Authorization": f"Bearer {self.token}"}
        params = {"instruments": ",".join(self.instruments)}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=self.quiet_s)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(url, headers=headers, params=params) as resp,
        ):
            if resp.status != 200:
                raise StreamEnded(f"pricing stream answered {resp.status}")
            async for line in _lines(resp):
                data = orjson.loads(line)
                if data.get("type") == "PRICE" and data.get("bids") and data.get("asks"):
                    await deliver(_oanda_price(data))
            raise StreamEnded("the venue ended the stream")


async def _lines(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for raw in resp.content:
            if raw.strip():
                yield raw
    except TimeoutError:
        raise StreamEnded("no line (not even a heartbeat) in time") from None


def _oanda_price(data: dict) -> MarketEvent:
    bid, ask = Decimal(data["bids"][0]["price"]), Decimal(data["asks"][0]["price"])
    return MarketEvent(
        venue="oanda",
        symbol=data["instrument"],
        kind="price",
        event_id=data["time"],
        price=(bid + ask) / 2,
        quantity=None,
        venue_time_ms=rfc3339_ms(data["time"]),
        received_ms=now_ms(),
    )


# --- delivery ----------------------------------------------------------------------------------


LAST_PREFIX = "gekko:market:last:"
# symbol -> "<price> <received_ms>" of the last published event, per venue: what the portfolio
# values venue positions at, where it is newer than their last fill.
PRICE_PREFIX = "gekko:market:price:"


class RedisSink:
    """XADD each event to gekko:market:<venue> (trimmed, approximately, to STREAM_MAXLEN),
    recording the exchange-to-publish latency. With `remember_last`, the event's id is kept as
    its symbol's last in gekko:market:last:<venue> in the same transaction, for whoever
    publishes next to go on from (a Binance.US feed refills from it), and its price as the
    symbol's last in gekko:market:price:<venue>."""

    def __init__(
        self,
        redis: Any,
        observe: Callable[[str, float], None] | None = None,
        *,
        remember_last: bool = False,
    ) -> None:
        self.redis = redis
        self.observe = observe
        self.remember_last = remember_last

    async def __call__(self, event: MarketEvent) -> None:
        stream = STREAM_PREFIX + event.venue
        if self.remember_last:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xadd(stream, event.fields(), maxlen=STREAM_MAXLEN, approximate=True)
                pipe.hset(LAST_PREFIX + event.venue, event.symbol, event.event_id)
                last = f"{format(event.price, 'f')} {event.received_ms}"
                pipe.hset(PRICE_PREFIX + event.venue, event.symbol, last)
                await pipe.execute()
        else:
            await self.redis.xadd(stream, event.fields(), maxlen=STREAM_MAXLEN, approximate=True)
        if self.observe is not None and event.venue_time_ms is not None:
            self.observe(event.venue, max(0.0, (now_ms() - event.venue_time_ms) / 1000))
