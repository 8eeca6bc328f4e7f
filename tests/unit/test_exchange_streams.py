"""Market-data feeds against stream doubles on loopback: each venue's stream breaks the way
it documents it can (a dropped connection, a sequence gap, a silent stream), and the feed
reconnects, resubscribes, refills what it missed and delivers every trade once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal

import orjson
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from gekko.config import MarketFeeds
from gekko.exchanges.base import Mode
from gekko.exchanges.streams import (
    STREAM_MAXLEN,
    BinanceUSTrades,
    CoinbaseTrades,
    Feed,
    FeedStats,
    MarketEvent,
    OandaPrices,
    RedisSink,
    rfc3339_ms,
)
from gekko.services.venue_feeds import build_session


def _agg(trade_id: int) -> dict:
    return {
        "e": "aggTrade",
        "E": 1_700_000_000_000 + trade_id,
        "s": "BTCUSD",
        "a": trade_id,
        "p": f"{30000 + trade_id}.00",
        "q": "0.01",
        "f": trade_id,
        "l": trade_id,
        "T": 1_700_000_000_000 + trade_id,
        "m": False,
        "M": True,
    }


async def _feed_until(feed: Feed, done: Callable[[], bool], limit_s: float = 10.0) -> None:
    task = asyncio.create_task(feed.run())
    deadline = time.monotonic() + limit_s
    # Polled: the feed knows nothing of what a test waits for. Bounded by limit_s.
    while not done() and time.monotonic() < deadline and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    feed.stop()
    await asyncio.wait_for(task, 5)


def test_binanceus_refills_a_gap_and_drops_the_replay_after_a_reconnect():
    # Connection 1 sends trades 1, 2 and 5, then closes; connection 2 replays 5, then 6.
    scripts = [[1, 2, 5, "close"], [5, 6]]
    streams_asked, backfills = [], []

    async def stream(request: web.Request) -> web.WebSocketResponse:
        streams_asked.append(request.query["streams"])
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for step in scripts.pop(0) if scripts else []:
            if step == "close":
                await ws.close()
                return ws
            await ws.send_str(
                orjson.dumps({"stream": "btcusd@aggTrade", "data": _agg(step)}).decode()
            )
        async for _ in ws:  # keep it open until the client leaves
            pass
        return ws

    async def agg_trades(request: web.Request) -> web.Response:
        start, limit = int(request.query["fromId"]), int(request.query["limit"])
        backfills.append((request.query["symbol"], start, limit))
        made = 6  # the venue has made trades 1 to 6
        return web.json_response([_agg(i) for i in range(start, min(start + limit, made + 1))])

    delivered: list[MarketEvent] = []

    async def sink(event: MarketEvent) -> None:
        delivered.append(event)

    async def scenario():
        app = web.Application()
        app.router.add_get("/stream", stream)
        app.router.add_get("/api/v3/aggTrades", agg_trades)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        base = str(server.make_url("")).rstrip("/")
        feed = Feed("binanceus", session=None, sink=sink, backoff_base_s=0.01)  # type: ignore[arg-type]
        feed.session = BinanceUSTrades(
            ["BTCUSD"], ws_url=base.replace("http", "ws"), rest_url=base, stats=feed.stats
        )
        try:
            await _feed_until(feed, lambda: len(delivered) >= 6)
        finally:
            await server.close()
        return feed

    feed = asyncio.run(scenario())
    assert [int(e.event_id) for e in delivered] == [1, 2, 3, 4, 5, 6]
    assert streams_asked == ["btcusd@aggTrade", "btcusd@aggTrade"], "resubscribed"
    # The gap (3 and 4, before 5); then, reconnected, the trades since 5 before the stream's
    # (6, which the stream's replay of 5 and 6 then finds delivered).
    assert backfills == [("BTCUSD", 3, 2), ("BTCUSD", 6, 1000)]
    assert (feed.stats.gaps, feed.stats.backfilled, feed.stats.reconnects) == (1, 3, 1)
    assert delivered[2].price == Decimal("30003.00") and delivered[2].venue_time_ms


def test_coinbase_subscribes_in_time_and_reconnects_on_a_sequence_gap():
    subscriptions: list[list[dict]] = []

    def trades_message(sequence: int, kind: str, ids: list[str]) -> dict:
        trades = [
            {
                "trade_id": i,
                "product_id": "BTC-USD",
                "price": "30000.5",
                "size": "0.1",
                "side": "BUY",
                "time": "2026-12-03T10:00:00.123456789Z",
            }
            for i in ids
        ]
        return {
            "channel": "market_trades",
            "client_id": "",
            "timestamp": "2026-12-03T10:00:00.2Z",
            "sequence_num": sequence,
            "events": [{"type": kind, "trades": trades}],
        }

    heartbeat = {"channel": "heartbeats", "sequence_num": 0, "events": [{"heartbeat_counter": 1}]}
    scripts = [
        [
            heartbeat,
            trades_message(1, "snapshot", ["t1", "t2"]),
            trades_message(3, "update", ["tX"]),
        ],
        [trades_message(0, "snapshot", ["t2", "t3"])],
    ]

    async def stream(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        asked = []
        for _ in range(2):  # the venue wants the subscriptions within 5 s
            message = await ws.receive(timeout=5)
            assert message.type is WSMsgType.TEXT  # JSON text frames
            asked.append(orjson.loads(message.data))
        subscriptions.append(asked)
        for message in scripts.pop(0) if scripts else []:
            await ws.send_str(orjson.dumps(message).decode())
        async for _ in ws:
            pass
        return ws

    delivered: list[str] = []

    async def sink(event: MarketEvent) -> None:
        delivered.append(event.event_id)

    async def scenario():
        app = web.Application()
        app.router.add_get("/", stream)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        url = str(server.make_url("/")).replace("http", "ws")
        feed = Feed("coinbase", session=None, sink=sink, backoff_base_s=0.01)  # type: ignore[arg-type]
        feed.session = CoinbaseTrades(["BTC-USD"], ws_url=url, stats=feed.stats)
        try:
            await _feed_until(feed, lambda: len(delivered) >= 3)
        finally:
            await server.close()
        return feed

    feed = asyncio.run(scenario())
    # tX came after a gap (sequence 3 after 1): the session ended before delivering it, and
    # the new connection's snapshot refilled from t2, which was dropped as already delivered.
    assert delivered == ["t1", "t2", "t3"]
    assert (feed.stats.gaps, feed.stats.duplicates, feed.stats.reconnects) == (1, 1, 1)
    assert subscriptions[0] == [
        {"type": "subscribe", "channel": "heartbeats"},
        {"type": "subscribe", "channel": "market_trades", "product_ids": ["BTC-USD"]},
    ]
    assert len(subscriptions) == 2


def test_oanda_reconnects_when_even_the_heartbeats_stop():
    seen_auth = []
    connections = []

    async def pricing(request: web.Request) -> web.StreamResponse:
        seen_auth.append(request.headers.get("Authorization"))
        connections.append(request.query["instruments"])
        resp = web.StreamResponse()
        await resp.prepare(request)
        n = len(connections)
        price = {
            "type": "PRICE",
            "instrument": "EUR_USD",
            "time": f"2026-12-03T10:00:0{n}.960449532Z",
            "bids": [{"price": "1.10000", "liquidity": 1000000}],
            "asks": [{"price": "1.10020", "liquidity": 1000000}],
            "tradeable": True,
        }
        await resp.write(orjson.dumps(price) + b"\n")
        await resp.write(b'{"type":"HEARTBEAT","time":"2026-12-03T10:00:05.000000000Z"}\n')
        await asyncio.sleep(3)  # then silence, not even a heartbeat
        return resp

    delivered: list[MarketEvent] = []
    quiet_reasons: list[str] = []

    async def sink(event: MarketEvent) -> None:
        if feed_box and feed_box[0].stats.last_reason:
            quiet_reasons.append(feed_box[0].stats.last_reason)
        delivered.append(event)

    feed_box: list[Feed] = []

    async def scenario():
        app = web.Application()
        app.router.add_get("/v3/accounts/101-1/pricing/stream", pricing)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        feed = Feed("oanda", session=None, sink=sink, backoff_base_s=0.01)  # type: ignore[arg-type]
        feed_box.append(feed)
        feed.session = OandaPrices(
            "101-1",
            "tok",
            ["EUR_USD"],
            stream_url=str(server.make_url("")).rstrip("/"),
            quiet_s=0.3,
        )
        try:
            await _feed_until(feed, lambda: len(delivered) >= 2)
        finally:
            await server.close()
        return feed

    feed = asyncio.run(scenario())
    assert len(delivered) == 2 and feed.stats.reconnects >= 1
    assert delivered[0].price == Decimal("1.10010") and delivered[0].symbol == "EUR_USD"
    assert seen_auth[0] == "Bearer tok" and connections[0] == "EUR_USD"
    # The first session ended because the stream went quiet, not because it closed.
    assert len(connections) >= 2 and quiet_reasons and "not even a heartbeat" in quiet_reasons[0]
    assert "tok" not in repr(feed.session)


def test_the_sink_adds_to_the_venues_stream_and_measures_the_delay():
    added, observed = [], []

    class FakeRedis:
        async def xadd(self, name, fields, maxlen, approximate):
            added.append((name, fields, maxlen, approximate))

    event = MarketEvent(
        "binanceus", "BTCUSD", "trade", "7", Decimal("1.5"), Decimal("2"), 1_000, 1_250
    )
    asyncio.run(RedisSink(FakeRedis(), lambda venue, s: observed.append((venue, s)))(event))
    name, fields, maxlen, approximate = added[0]
    assert name == "gekko:market:binanceus" and (maxlen, approximate) == (STREAM_MAXLEN, True)
    assert fields == {
        "venue": "binanceus",
        "symbol": "BTCUSD",
        "kind": "trade",
        "id": "7",
        "price": "1.5",
        "quantity": "2",
        "received_ms": "1250",
        "venue_time_ms": "1000",
    }
    assert observed[0][0] == "binanceus" and observed[0][1] > 0


def test_rfc3339_with_nanoseconds():
    assert rfc3339_ms("2026-12-03T10:00:00.123456789Z") == 1796292000123
    assert rfc3339_ms("2026-12-03T10:00:00Z") == 1796292000000


def test_a_sink_outage_costs_a_reconnect_not_an_event_nor_the_feed():
    # Trades 1, 2, 3 on each connection; the sink fails once, on trade 2.
    failures = [2]
    delivered: list[int] = []

    async def stream(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for trade_id in (1, 2, 3):
            await ws.send_str(orjson.dumps({"data": _agg(trade_id)}).decode())
        async for _ in ws:
            pass
        return ws

    async def sink(event: MarketEvent) -> None:
        if int(event.event_id) in failures:
            failures.remove(int(event.event_id))
            raise ConnectionError("Redis is away")
        delivered.append(int(event.event_id))

    async def agg_trades(request: web.Request) -> web.Response:
        # The venue has made trades 1 to 3: a reconnected feed catches up from its last.
        start = int(request.query["fromId"])
        return web.json_response([_agg(i) for i in range(start, 4)])

    async def scenario():
        app = web.Application()
        app.router.add_get("/stream", stream)
        app.router.add_get("/api/v3/aggTrades", agg_trades)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        base = str(server.make_url("")).rstrip("/")
        feed = Feed("binanceus", session=None, sink=sink, backoff_base_s=0.01)  # type: ignore[arg-type]
        feed.session = BinanceUSTrades(["BTCUSD"], ws_url=base.replace("http", "ws"), rest_url=base)
        try:
            await _feed_until(feed, lambda: len(delivered) >= 3)
        finally:
            await server.close()
        return feed

    feed = asyncio.run(scenario())
    assert delivered == [1, 2, 3] and "Redis is away" in feed.stats.last_reason


def test_a_cancelled_feed_closes_its_connection():
    closed = asyncio.Event()

    async def scenario():
        async def stream(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for _ in ws:
                pass
            closed.set()
            return ws

        app = web.Application()
        app.router.add_get("/stream", stream)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        base = str(server.make_url("")).rstrip("/")

        async def sink(event: MarketEvent) -> None:
            pass

        feed = Feed("binanceus", session=None, sink=sink)  # type: ignore[arg-type]
        feed.session = BinanceUSTrades(["BTCUSD"], ws_url=base.replace("http", "ws"), rest_url=base)
        task = asyncio.create_task(feed.run())
        await asyncio.sleep(0.3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        try:
            await asyncio.wait_for(closed.wait(), 5)
        finally:
            await server.close()

    asyncio.run(scenario())
    assert closed.is_set()


def test_the_binance_feed_refills_from_the_preferred_host_when_alternates_are_listed():
    session = build_session(
        "binanceus",
        ("BTCUSD",),
        Mode.LIVE,
        MarketFeeds(symbols={"binanceus": ("BTCUSD",)}),
        {"binanceus": "https://a.example,https://b.example"},
        {},
        FeedStats(),
    )
    assert session.rest_url == "https://a.example"
