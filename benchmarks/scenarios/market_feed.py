"""Exchange-to-publish: a Binance.US aggregate-trade stream on loopback sending trades at a fixed
rate, read by the platform's own feed (gekko.exchanges.streams: BinanceUSTrades in a Feed) and
published by its RedisSink into the bench's Redis, as the market_data service does (with the
last id kept in the same transaction). Each trade's delay runs from the moment the stream sends
it to its XADD having returned, on one monotonic clock (the venue times on the wire are whole
milliseconds). The stream runs on its own event loop in a thread: the feed's loop does nothing
else, though the two share the interpreter, as they would not in production."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time

import orjson
from aiohttp import web
from redis.asyncio import Redis

from gekko.exchanges.streams import (
    LAST_PREFIX,
    STREAM_PREFIX,
    BinanceUSTrades,
    Feed,
    FeedStats,
    MarketEvent,
    RedisSink,
)

EVENTS = 3000
RATE_PER_S = 300.0
SYMBOL = "BTCUSD"


def _trade(n: int) -> dict:
    ms = int(time.time() * 1000)
    return {"e": "aggTrade", "E": ms, "s": SYMBOL, "a": n, "p": "30000.00", "q": "0.01",
            "f": n, "l": n, "T": ms, "m": False, "M": True}  # fmt: skip


def _serve_stream(events: int, rate: float, sent: dict[int, float]) -> tuple[str, threading.Event]:
    """The stream's URL; it sends `events` trades at `rate` a second to whoever connects,
    noting when it sent each (`sent`, by trade id)."""
    ready, done = threading.Event(), threading.Event()
    where: list[str] = []

    async def stream(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        started = time.monotonic()
        for n in range(1, events + 1):
            # On a schedule, not a sleep per trade: the rate holds whatever a send costs.
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            sent[n] = time.perf_counter()
            await ws.send_str(orjson.dumps({"stream": "x", "data": _trade(n)}).decode())
        await asyncio.sleep(1)
        await ws.close()
        return ws

    def serve() -> None:
        async def main() -> None:
            app = web.Application()
            app.router.add_get("/stream", stream)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the bound port
            where.append(f"ws://127.0.0.1:{port}")
            ready.set()
            # A thread's event, not the loop's: polled, bounded by the bench's own end.
            while not done.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            await runner.cleanup()

        asyncio.run(main())

    threading.Thread(target=serve, daemon=True, name="bench-stream").start()
    if not ready.wait(10):
        raise RuntimeError("the bench's stream did not start")
    return where[0], done


async def _run(redis_url: str, events: int, rate: float) -> dict[str, float]:
    sent: dict[int, float] = {}
    url, done = _serve_stream(events, rate, sent)
    redis = Redis.from_url(redis_url)
    delays: list[float] = []
    publish = RedisSink(redis, remember_last=True)

    async def sink(event: MarketEvent) -> None:
        await publish(event)
        delays.append(time.perf_counter() - sent[int(event.event_id)])

    stats = FeedStats()
    feed = Feed(
        "binanceus",
        BinanceUSTrades([SYMBOL], ws_url=url, rest_url="http://127.0.0.1:9", stats=stats),
        sink,
        stats=stats,
    )
    task = asyncio.create_task(feed.run())
    deadline = time.monotonic() + events / rate + 20
    try:
        # Polled: the feed knows nothing of the bench's count. Bounded by the deadline.
        while len(delays) < events and time.monotonic() < deadline and not task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    finally:
        feed.stop()
        await asyncio.wait_for(task, 5)
        await redis.delete(STREAM_PREFIX + "binanceus", LAST_PREFIX + "binanceus")
        await redis.aclose()
        done.set()
    if len(delays) < events:
        raise RuntimeError(f"only {len(delays)} of {events} trades were published in time")
    ms = sorted(d * 1000 for d in delays)
    return {
        "events": events,
        "rate_per_s": rate,
        "reconnects": stats.reconnects,
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[int(len(ms) * 0.99) - 1], 2),
        "max_ms": round(ms[-1], 2),
    }


def run(redis_url: str, events: int = EVENTS, rate: float = RATE_PER_S) -> dict[str, float]:
    return asyncio.run(_run(redis_url, events, rate))


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/0")))
