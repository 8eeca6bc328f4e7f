"""The venues' market-data streams on loopback, as their docs describe them, fed by one trade
producer: Binance.US's combined `<symbol>@aggTrade` streams (`/stream?streams=`) with
consecutive aggregate trade ids and `GET /api/v3/aggTrades?fromId=` for what a client missed;
Coinbase Advanced Trade's WebSocket (`/ws`: `heartbeats` and `market_trades` subscribed within
5 s, a snapshot of recent trades first, `sequence_num` per connection, a heartbeat a second);
OANDA's HTTP pricing stream (`/v3/accounts/{id}/pricing/stream`, bearer token, one JSON line
per PRICE and a HEARTBEAT every `heartbeat_s`).

Each event carries its venue time as it is made, so a client's exchange-to-publish latency is
measured from it. Faults: `drop()` closes every connection now (what a venue's restart or a
network cut does); trades made while a client is away are the gap it must refill.
Driven from another thread (the tests'): `produce(n, rate)` asks for n more trades per venue.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from aiohttp import WSMsgType, web

COINBASE_SNAPSHOT = 50


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


@dataclass
class MarketStreamsDouble:
    binance_symbol: str = "BTCUSD"
    coinbase_product: str = "BTC-USD"
    oanda_instrument: str = "EUR_USD"
    oanda_token: str = ""
    oanda_account: str = ""
    heartbeat_s: float = 1.0
    # Made so far, per venue (ids from 1).
    binance_trades: list[dict] = field(default_factory=list)
    coinbase_trades: list[dict] = field(default_factory=list)
    oanda_prices: list[dict] = field(default_factory=list)
    connections: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VENUES, 0))
    backfills: list[tuple[int, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _wanted: int = 0
    _rate: float = 100.0
    _listeners: dict[str, set[asyncio.Queue]] = field(
        default_factory=lambda: {venue: set() for venue in VENUES}
    )
    _drops: int = 0
    _stopping: bool = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/stream", self.binance_stream)
        app.router.add_get("/api/v3/aggTrades", self.binance_agg_trades)
        app.router.add_get("/ws", self.coinbase_ws)
        app.router.add_get("/v3/accounts/{account}/pricing/stream", self.oanda_stream)
        app.cleanup_ctx.append(self._producer)
        app.on_shutdown.append(self._stop_streams)
        return app

    async def _stop_streams(self, app: web.Application) -> None:
        self._stopping = True

    # --- driven from the tests' thread ---

    def produce(self, n: int, rate_per_s: float = 100.0) -> None:
        """n more events per venue, `rate_per_s` of them a second."""
        with self._lock:
            self._wanted += n
            self._rate = rate_per_s

    def drop(self) -> None:
        """Every connection closed now."""
        with self._lock:
            self._drops += 1

    # --- the producer ---

    async def _producer(self, app: web.Application):
        task = asyncio.create_task(self._produce())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _produce(self) -> None:
        while True:
            with self._lock:
                wanted, rate = self._wanted, self._rate
                if wanted:
                    self._wanted -= 1
            if not wanted:
                await asyncio.sleep(0.01)
                continue
            self._make_one()
            await asyncio.sleep(1 / rate)

    def _make_one(self) -> None:
        ms = int(time.time() * 1000)
        n = len(self.binance_trades) + 1
        price = f"{30000 + n % 100}.{n % 100:02d}"
        agg = {
            "e": "aggTrade", "E": ms, "s": self.binance_symbol, "a": n, "p": price,
            "q": "0.01", "f": n, "l": n, "T": ms, "m": False, "M": True,
        }  # fmt: skip
        self.binance_trades.append(agg)
        trade = {
            "trade_id": str(n), "product_id": self.coinbase_product, "price": price,
            "size": "0.01", "side": "BUY", "time": _rfc3339(ms),
        }  # fmt: skip
        self.coinbase_trades.append(trade)
        bid = 1.1 + (n % 50) / 10000
        quote = {
            "type": "PRICE", "instrument": self.oanda_instrument, "time": _rfc3339(ms),
            "bids": [{"price": f"{bid:.5f}", "liquidity": 1000000}],
            "asks": [{"price": f"{bid + 0.0002:.5f}", "liquidity": 1000000}],
            "tradeable": True,
        }  # fmt: skip
        self.oanda_prices.append(quote)
        for venue, event in (("binanceus", agg), ("coinbase", trade), ("oanda", quote)):
            for queue in self._listeners[venue]:
                queue.put_nowait(event)

    async def _events(self, venue: str, request: web.Request):
        """This connection's events as they are made (None every 50 ms without one); ends when
        the connections are dropped, the client has gone, or the double stops."""
        queue: asyncio.Queue = asyncio.Queue()
        drops = self._drops
        self.connections[venue] += 1
        self._listeners[venue].add(queue)
        try:
            while (
                self._drops == drops
                and not self._stopping
                and request.transport is not None
                and not request.transport.is_closing()
            ):
                try:
                    yield await asyncio.wait_for(queue.get(), timeout=0.05)
                except TimeoutError:
                    yield None
        finally:
            self._listeners[venue].discard(queue)

    # --- Binance.US ---

    async def binance_stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        stream = f"{self.binance_symbol.lower()}@aggTrade"
        if stream not in request.query.get("streams", "").split("/"):
            await ws.close(message=b"unknown stream")
            return ws
        async for trade in self._events("binanceus", request):
            if ws.closed:
                break
            if trade is not None:
                await ws.send_str(orjson.dumps({"stream": stream, "data": trade}).decode())
        await ws.close()
        return ws

    async def binance_agg_trades(self, request: web.Request) -> web.Response:
        start = int(request.query["fromId"])
        limit = min(int(request.query.get("limit", "500")), 1000)
        self.backfills.append((start, limit))
        return web.json_response(self.binance_trades[start - 1 : start - 1 + limit])

    # --- Coinbase ---

    async def coinbase_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        channels = set()
        with contextlib.suppress(TimeoutError):
            while not {"heartbeats", "market_trades"} <= channels:
                message = await ws.receive(timeout=5)
                if message.type is not WSMsgType.TEXT:
                    return ws
                channels.add(orjson.loads(message.data).get("channel"))
        if not {"heartbeats", "market_trades"} <= channels:
            await ws.close(message=b"subscribe within 5 s")
            return ws
        sequence = 0

        async def send(channel: str, events: list[dict]) -> None:
            nonlocal sequence
            message = {
                "channel": channel, "client_id": "", "timestamp": _rfc3339(int(time.time() * 1000)),
                "sequence_num": sequence, "events": events,
            }  # fmt: skip
            sequence += 1
            await ws.send_str(orjson.dumps(message).decode())

        recent = self.coinbase_trades[-COINBASE_SNAPSHOT:][::-1]  # newest first
        await send("market_trades", [{"type": "snapshot", "trades": recent}])
        beat = time.monotonic()
        async for trade in self._events("coinbase", request):
            if ws.closed:
                break
            if trade is not None:
                await send("market_trades", [{"type": "update", "trades": [trade]}])
            if time.monotonic() - beat >= self.heartbeat_s:
                beat = time.monotonic()
                await send("heartbeats", [{"current_time": _rfc3339(int(time.time() * 1000))}])
        await ws.close()
        return ws

    # --- OANDA ---

    async def oanda_stream(self, request: web.Request) -> web.StreamResponse:
        if (
            request.headers.get("Authorization") != f"Bearer {self.oanda_token}"
            or request.match_info["account"] != self.oanda_account
        ):
            return web.json_response({"errorMessage": "Insufficient authorization"}, status=401)
        resp = web.StreamResponse()
        await resp.prepare(request)
        beat = time.monotonic()
        async for price in self._events("oanda", request):
            if price is not None:
                await resp.write(orjson.dumps(price) + b"\n")
            if time.monotonic() - beat >= self.heartbeat_s:
                beat = time.monotonic()
                stamp = _rfc3339(int(time.time() * 1000))
                await resp.write(orjson.dumps({"type": "HEARTBEAT", "time": stamp}) + b"\n")
        return resp


VENUES = ("binanceus", "coinbase", "oanda")
