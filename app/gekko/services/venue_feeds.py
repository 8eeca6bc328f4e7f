"""market_data: the venues' real-time market data (gekko.exchanges.streams), streamed into Redis
by the market_data service for whoever consumes it (`gekko:market:<venue>`).

GEKKO_MARKET_FEEDS names the venues and their symbols; each venue gets one reconnecting feed
(jittered back-off, resubscription, gap refill, at-least-once delivery with duplicates
dropped). Binance.US's and Coinbase's market data are public; OANDA's pricing stream takes the
platform's own key, read from a sealed file (gekko.exchanges.platform_keys).

One publisher per venue: every market_data instance is ready to run a venue's feed, but only the
holder of its lease in Redis (gekko:market:lease:<venue>, renewed every few seconds) does; when
it stops, drains or dies, another takes the lease within LEASE_S and goes on from the last event
published (Binance.US refills the trades between by id; Coinbase's snapshot refills its recent
trades, a few of them published twice; OANDA's prices are a state and resume).

  GET /api/v1/market-data/venues                    each feed: who publishes it, and in this
                                                    instance: events delivered, reconnects,
                                                    gaps, the last event's age
  GET /api/v1/market-data/venues/{venue}/events     the latest events of a venue, newest first

Metrics: gekko_market_feed_events_total, _reconnects_total, _gaps_total, _duplicates_total,
_last_event_age_seconds (per venue, read from the feeds at each scrape) and
gekko_market_feed_publish_delay_seconds, the exchange-to-publish latency: from the venue's own
event time to the event's XADD having returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query, Request
from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel

from gekko.config import VENUE_NAMES, ConfigError, MarketFeeds, split_hosts
from gekko.events import as_text
from gekko.exchanges import binanceus, platform_keys
from gekko.exchanges.base import Mode
from gekko.exchanges.streams import (
    BINANCEUS_WS,
    COINBASE_WS,
    LAST_PREFIX,
    OANDA_STREAM_LIVE,
    OANDA_STREAM_PRACTICE,
    STREAM_PREFIX,
    BinanceUSTrades,
    CoinbaseTrades,
    Feed,
    FeedStats,
    OandaPrices,
    RedisSink,
    Session,
    now_ms,
)
from gekko.security.crypto import DataKeys
from gekko.security.rbac import OPERATE_READ, PUBLIC, AccessTable

log = logging.getLogger(__name__)

PREFIX = "/api/v1/market-data/venues"
router = APIRouter(prefix=PREFIX, tags=["market_data"])
ACCESS: AccessTable = {
    ("GET", PREFIX): OPERATE_READ,
    ("GET", PREFIX + "/{venue}/events"): PUBLIC,
}
# Exchange-to-publish: tens of milliseconds on a good day, seconds when a gap is refilled.
DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A symbol asked of the events: at most this many of the venue's latest events are looked
# through (the feeds share this event loop).
SCAN_LIMIT = 2000
# The lease of a venue's feed: held this long unless renewed, renewed this often.
LEASE_S = 10.0
RENEW_S = 3.0
# Take the lease if free, or renew it if ours; 1 if held by us now.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
LEASE_PREFIX = "gekko:market:lease:"


class FeedOut(BaseModel):
    venue: str
    symbols: list[str]
    # The instance that holds the venue's lease and publishes it; whether that is this one.
    publisher: str | None
    publishing_here: bool
    delivered: int
    reconnects: int
    gaps: int
    backfilled: int
    duplicates: int
    last_event_age_s: float | None
    last_reason: str


class EventOut(BaseModel):
    stream_id: str
    venue: str
    symbol: str
    kind: str
    id: str
    price: str
    quantity: str | None = None
    venue_time_ms: int | None = None
    received_ms: int


def build_session(
    venue: str,
    symbols: tuple[str, ...],
    mode: Mode,
    feeds: MarketFeeds,
    base_urls: dict[str, str],
    keys: platform_keys.Keys,
    stats: FeedStats,
    last_ids: dict[str, str] | None = None,
) -> Session:
    """The venue's stream session, at its mode's host or the one the settings name, going on
    from the last ids published (Binance.US's trade ids: the gap is refilled)."""
    url = feeds.stream_urls.get(venue)
    if venue == "binanceus":
        return BinanceUSTrades(
            list(symbols),
            ws_url=url or BINANCEUS_WS,
            # Its refills ask the preferred host (the first, where alternates are listed).
            rest_url=split_hosts(base_urls.get("binanceus", binanceus.LIVE_URL))[0],
            stats=stats,
            last_id={s: int(i) for s, i in (last_ids or {}).items() if i.isdigit()},
        )
    if venue == "coinbase":
        return CoinbaseTrades(list(symbols), ws_url=url or COINBASE_WS, stats=stats)
    oanda = keys.get("oanda")
    if oanda is None:
        raise platform_keys.PlatformKeysError(
            "the OANDA pricing stream needs the platform's OANDA key in the sealed file"
        )
    default = OANDA_STREAM_LIVE if mode is Mode.LIVE else OANDA_STREAM_PRACTICE
    return OandaPrices(
        oanda["account_id"], oanda["api_token"], list(symbols), stream_url=url or default
    )


class _FeedsCollector(Collector):
    """The feeds' own counts, read at each scrape (nothing counted twice)."""

    def __init__(self, runners: dict[str, VenueFeed]) -> None:
        self.runners = runners

    def collect(self) -> Iterator[Any]:
        counts = {
            "events": ("events delivered to the venue's Redis stream", "delivered"),
            "reconnects": ("sessions started again after one ended", "reconnects"),
            "gaps": ("sequence or trade-id gaps seen", "gaps"),
            "duplicates": ("events dropped as already delivered", "duplicates"),
            "lost": ("missed events too many to refill", "lost"),
        }
        for name, (text, attribute) in counts.items():
            family = CounterMetricFamily(
                f"gekko_market_feed_{name}", f"Market feeds: {text}", labels=["venue"]
            )
            for venue, runner in self.runners.items():
                family.add_metric([venue], getattr(runner.stats, attribute))
            yield family
        publishing = GaugeMetricFamily(
            "gekko_market_feed_publishing",
            "Market feeds: 1 where this instance holds the venue's lease and publishes it",
            labels=["venue"],
        )
        age = GaugeMetricFamily(
            "gekko_market_feed_last_event_age_seconds",
            "Market feeds: seconds since this instance last delivered an event of the venue "
            "(since it began publishing, before the first one)",
            labels=["venue"],
        )
        for venue, runner in self.runners.items():
            publishing.add_metric([venue], float(runner.publishing))
            if runner.publishing:
                age.add_metric([venue], runner.quiet_for_s())
        yield publishing
        yield age


class VenueFeed:
    """A venue's feed in this instance: run while this instance holds the venue's lease."""

    def __init__(
        self,
        venue: str,
        make_session: Callable[[FeedStats, dict[str, str]], Session],
        instance_id: str,
    ) -> None:
        self.venue = venue
        self.make_session = make_session
        self.instance_id = instance_id
        self.stats = FeedStats()  # kept across terms: the metrics only go up
        self.publishing = False
        self.publishing_since = 0.0
        self._feed: Feed | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    @property
    def lease_key(self) -> str:
        return LEASE_PREFIX + self.venue

    def quiet_for_s(self) -> float:
        since = self.publishing_since * 1000
        if self.stats.last_event_ms is not None:
            since = max(since, self.stats.last_event_ms)
        return max(0.0, (now_ms() - since) / 1000)

    async def run(self, redis: Any, sink: RedisSink) -> None:
        """Hold the lease and publish, or wait for it, until stopped."""
        lease = redis.register_script(_LEASE)
        while not self._stop.is_set():
            try:
                held = await lease(
                    keys=[self.lease_key], args=[self.instance_id, int(LEASE_S * 1000)]
                )
            except Exception as exc:  # noqa: BLE001 - Redis away: the lease may pass to another
                log.warning("market feed %s: lease not renewed (%r)", self.venue, exc)
                held = 0
            if held and self._task is None:
                try:
                    await self._begin(redis, sink)
                except Exception as exc:  # noqa: BLE001 - Redis away: tried again next round
                    log.warning("market feed %s: not begun (%r)", self.venue, exc)
            elif not held and self._task is not None:
                log.info("market feed %s: lease lost; another instance publishes it", self.venue)
                await self._end()
            if self._task is not None and self._task.done():
                await self._end()  # a feed that ended on its own begins again next round
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), RENEW_S)
        await self._end()
        with contextlib.suppress(Exception):
            await redis.eval(_RELEASE, 1, self.lease_key, self.instance_id)

    async def _begin(self, redis: Any, sink: RedisSink) -> None:
        raw = await redis.hgetall(LAST_PREFIX + self.venue)
        last = {as_text(k): as_text(v) for k, v in raw.items()}
        self._feed = Feed(self.venue, self.make_session(self.stats, last), sink, stats=self.stats)
        self._task = asyncio.create_task(self._feed.run(), name=f"market-feed-{self.venue}")
        self.publishing, self.publishing_since = True, time.time()
        log.info("market feed %s: publishing from this instance", self.venue)

    async def _end(self) -> None:
        if self._feed is not None and self._task is not None:
            self._feed.stop()
            _, left = await asyncio.wait({self._task}, timeout=5)
            for task in left:
                task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._feed, self._task, self.publishing = None, None, False

    def stop(self) -> None:
        self._stop.set()


def configure(app: FastAPI) -> None:
    settings = app.state.settings
    wanted: MarketFeeds = settings.market_feeds
    app.state.market_feeds = {}
    app.state.market_feed_tasks = []
    if not wanted.symbols:
        return
    keys: platform_keys.Keys = {}
    if wanted.platform_keys_file:
        try:
            keys = platform_keys.load(
                wanted.platform_keys_file, DataKeys(path=wanted.platform_key_file)
            )
        except Exception as exc:  # noqa: BLE001 - reported as the configuration error it is
            raise ConfigError(f"GEKKO_PLATFORM_VENUE_KEYS_FILE: {exc}") from None
    mode = Mode(settings.exchange_mode)

    def maker(venue: str) -> Callable[[FeedStats, dict[str, str]], Session]:
        def make(stats: FeedStats, last: dict[str, str]) -> Session:
            return build_session(
                venue, wanted.symbols[venue], mode, wanted, settings.venue_base_urls, keys,
                stats, last,
            )  # fmt: skip

        return make

    for venue in wanted.symbols:
        try:
            maker(venue)(FeedStats(), {})  # checked now: a missing key stops the start
        except platform_keys.PlatformKeysError as exc:
            raise ConfigError(f"GEKKO_MARKET_FEEDS: {exc}") from None
        app.state.market_feeds[venue] = VenueFeed(venue, maker(venue), settings.instance_id)
    app.state.market_feed_delay = Histogram(
        "gekko_market_feed_publish_delay_seconds",
        "Market feeds: from the venue's event time to the event published in Redis",
        ["venue"],
        buckets=DELAY_BUCKETS,
        registry=app.state.metrics_registry,
    )
    app.state.metrics_registry.register(_FeedsCollector(app.state.market_feeds))
    # A draining instance hands its feeds over: it stops publishing and frees their leases.
    app.state.drain_hooks.append(
        lambda: [runner.stop() for runner in app.state.market_feeds.values()]
    )


async def start(app: FastAPI) -> None:
    if not app.state.market_feeds:
        return
    delay = app.state.market_feed_delay
    sink = RedisSink(
        app.state.redis, lambda venue, s: delay.labels(venue).observe(s), remember_last=True
    )
    for venue, runner in app.state.market_feeds.items():
        app.state.market_feed_tasks.append(
            asyncio.create_task(runner.run(app.state.redis, sink), name=f"market-lease-{venue}")
        )


async def stop(app: FastAPI) -> None:
    for runner in app.state.market_feeds.values():
        runner.stop()
    tasks = app.state.market_feed_tasks
    if tasks:
        _, left = await asyncio.wait(tasks, timeout=10)
        for task in left:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@router.get("", response_model=list[FeedOut])
async def feeds(request: Request) -> list[FeedOut]:
    """The venue feeds: which instance publishes each, and how this instance's have fared."""
    symbols = request.app.state.settings.market_feeds.symbols
    runners: dict[str, VenueFeed] = request.app.state.market_feeds
    holders = (
        await request.app.state.redis.mget([r.lease_key for r in runners.values()])
        if runners
        else []
    )
    out = []
    for (venue, runner), holder in zip(runners.items(), holders, strict=True):
        stats = runner.stats
        out.append(
            FeedOut(
                venue=venue,
                symbols=list(symbols[venue]),
                publisher=as_text(holder) if holder is not None else None,
                publishing_here=runner.publishing,
                delivered=stats.delivered,
                reconnects=stats.reconnects,
                gaps=stats.gaps,
                backfilled=stats.backfilled,
                duplicates=stats.duplicates,
                last_event_age_s=(
                    None
                    if stats.last_event_ms is None
                    else round((now_ms() - stats.last_event_ms) / 1000, 3)
                ),
                last_reason=stats.last_reason,
            )
        )
    return out


@router.get("/{venue}/events", response_model=list[EventOut])
async def events(
    request: Request,
    venue: Annotated[str, Path(pattern="^(" + "|".join(VENUE_NAMES) + ")$")],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    symbol: Annotated[str | None, Query(max_length=32)] = None,
) -> list[EventOut]:
    """The venue's latest events as published (newest first), by whichever instance publishes
    them; of one symbol if asked, among the venue's latest 2000. None where no feed runs."""
    symbol = symbol.upper() if symbol else None
    count = SCAN_LIMIT if symbol else limit
    entries = await request.app.state.redis.xrevrange(STREAM_PREFIX + venue, count=count)
    found = []
    for stream_id, fields in entries:
        event = {as_text(k): as_text(v) for k, v in fields.items()}
        if symbol is not None and event.get("symbol") != symbol:
            continue
        found.append(
            EventOut(
                stream_id=as_text(stream_id),
                venue=event["venue"],
                symbol=event["symbol"],
                kind=event["kind"],
                id=event["id"],
                price=event["price"],
                quantity=event.get("quantity"),
                venue_time_ms=int(event["venue_time_ms"]) if "venue_time_ms" in event else None,
                received_ms=int(event["received_ms"]),
            )
        )
        if len(found) == limit:
            break
    return found
