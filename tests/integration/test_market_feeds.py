"""The venues' market data in the running stack: two market_data instances configured with the
same feeds, of which one publishes each venue (the lease holder), stream Binance.US and
Coinbase trades and OANDA prices (with the platform's own OANDA key, sealed under a key derived
from the data keys) from stream doubles into Redis Streams, each event once, with its
exchange-to-publish latency measured; a stream killed mid-way is reconnected and what was missed
is refilled; a publisher that stops hands its venues over, and the next goes on from the last
event published."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from gekko.security.rbac import Role

from .conftest import LOOPBACK, Stack, as_role, market_feeds_env

pytestmark = pytest.mark.integration

VENUES_URL = "/api/v1/market-data/venues"
VIEWER = as_role(Role.VIEWER)
FIRST, SECOND = "md-feeds-1", "md-feeds-2"


def url(stack: Stack, instance: str) -> str:
    return f"http://{LOOPBACK}:{stack.ports[instance]}"


def feeds(stack: Stack, instance: str = FIRST) -> dict[str, dict]:
    answer = httpx.get(f"{url(stack, instance)}{VENUES_URL}", headers=VIEWER, timeout=5)
    assert answer.status_code == 200, answer.text
    return {feed["venue"]: feed for feed in answer.json()}


def stream_ids(stack: Stack, venue: str) -> list[str]:
    """The venue's event ids in its Redis stream, in order."""
    client = redis.Redis.from_url(stack.env["GEKKO_REDIS_URL"])
    try:
        return [f[b"id"].decode() for _, f in client.xrange(f"gekko:market:{venue}")]
    finally:
        client.close()


def wait_until(check, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, f"not within {limit_s} s: {what}"
        time.sleep(0.1)


def all_published(stack: Stack, market_streams) -> bool:
    made = [str(t["a"]) for t in market_streams.binance_trades]
    return sorted(stream_ids(stack, "binanceus"), key=int) == made


@pytest.fixture(scope="module")
def publishers(stack, market_streams_url, tmp_path_factory) -> Iterator[Stack]:
    """Two market_data instances with the feeds: the first takes every venue's lease."""
    env = market_feeds_env(tmp_path_factory.mktemp("feeds"), market_streams_url)
    started = []
    try:
        for instance in (FIRST, SECOND):
            stack.start(instance, "market_data", GEKKO_INSTANCE_ID=instance, **env)
            started.append(instance)
            wait_until(
                lambda i=instance: _ready(stack, i), 30, f"{instance} ready"
            )  # fmt: skip
            if instance == FIRST:
                wait_until(
                    lambda: all(f["publishing_here"] for f in feeds(stack).values()),
                    15,
                    "the first instance publishing every venue",
                )
        yield stack
    finally:
        for instance in started:
            if instance in stack.procs:
                stack.stop(instance)


def _ready(stack: Stack, instance: str) -> bool:
    proc = stack.procs[instance]
    if proc.poll() is not None:
        pytest.fail(f"{instance} exited:\n{stack.log_tail(instance)}")
    try:
        return httpx.get(f"{url(stack, instance)}/health/live", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_one_instance_publishes_each_venue_and_every_event_once(publishers, market_streams):
    stack = publishers
    before = feeds(stack)
    assert {venue: f["symbols"] for venue, f in before.items()} == {
        "binanceus": ["BTCUSD"], "coinbase": ["BTC-USD"], "oanda": ["EUR_USD"],
    }  # fmt: skip
    second = feeds(stack, SECOND)
    assert all(f["publisher"] == FIRST and not f["publishing_here"] for f in second.values())
    market_streams.produce(30, rate_per_s=200)
    wait_until(
        lambda: all(f["delivered"] >= before[v]["delivered"] + 30 for v, f in feeds(stack).items()),
        20,
        "30 events of each venue delivered",
    )
    # Once each: the second instance, configured alike, published none of them.
    assert all_published(stack, market_streams)
    coinbase = stream_ids(stack, "coinbase")
    assert len(coinbase) == len(set(coinbase)) >= 30
    assert all(f["delivered"] == 0 for f in feeds(stack, SECOND).values())

    made = [str(t["a"]) for t in market_streams.binance_trades]
    latest = httpx.get(
        f"{stack.gateway}{VENUES_URL}/binanceus/events",
        params={"limit": 5, "symbol": "btcusd"},
        timeout=5,
    )
    assert latest.status_code == 200, latest.text
    assert [e["id"] for e in latest.json()] == made[::-1][:5]  # newest first
    assert latest.json()[0]["venue_time_ms"] == market_streams.binance_trades[-1]["T"]
    # The last trade's price and when it came, as the portfolio values venue positions at it.
    client = redis.Redis.from_url(stack.env["GEKKO_REDIS_URL"], decode_responses=True)
    try:
        last = client.hget("gekko:market:price:binanceus", "BTCUSD").split(" ")
    finally:
        client.close()
    assert last[0] == latest.json()[0]["price"]
    assert abs(int(last[1]) - time.time() * 1000) < 60_000
    oanda = httpx.get(f"{url(stack, SECOND)}{VENUES_URL}/oanda/events", params={"limit": 1})
    assert oanda.json()[0]["kind"] == "price" and oanda.json()[0]["symbol"] == "EUR_USD"
    unknown = httpx.get(f"{url(stack, FIRST)}{VENUES_URL}/kraken/events")
    assert unknown.status_code == 422

    metrics = httpx.get(f"{url(stack, FIRST)}/metrics").text
    for venue in ("binanceus", "coinbase", "oanda"):
        count = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith(f'gekko_market_feed_publish_delay_seconds_count{{venue="{venue}"}}')
        )
        assert count >= 30
        assert f'gekko_market_feed_publishing{{venue="{venue}"}} 1.0' in metrics
    assert (
        'gekko_market_feed_publishing{venue="oanda"} 0.0'
        in httpx.get(f"{url(stack, SECOND)}/metrics").text
    )


def test_a_stream_killed_mid_way_is_reconnected_and_nothing_is_lost(publishers, market_streams):
    stack = publishers
    before = feeds(stack)
    made_before = len(market_streams.binance_trades)
    market_streams.produce(150, rate_per_s=50)  # 3 s of trades
    wait_until(
        lambda: len(market_streams.binance_trades) >= made_before + 40, 10, "trades under way"
    )
    market_streams.drop()  # every connection closed, mid-stream
    wait_until(
        lambda: len(market_streams.binance_trades) >= made_before + 150, 15, "all trades made"
    )
    wait_until(
        lambda: (
            feeds(stack)["binanceus"]["delivered"] >= before["binanceus"]["delivered"] + 150
            and feeds(stack)["coinbase"]["delivered"] >= before["coinbase"]["delivered"] + 150
        ),
        20,
        "every trade delivered after the reconnection",
    )
    after = feeds(stack)
    for venue in ("binanceus", "coinbase", "oanda"):
        assert after[venue]["reconnects"] > before[venue]["reconnects"], venue
    # Binance.US: the trades made while away were fetched by id (a gap, refilled), each once.
    assert all_published(stack, market_streams)
    assert after["binanceus"]["backfilled"] > before["binanceus"]["backfilled"]
    # Coinbase: the new connection's snapshot refilled them; the replayed ones were dropped.
    coinbase = stream_ids(stack, "coinbase")
    assert sorted(coinbase, key=int) == [t["trade_id"] for t in market_streams.coinbase_trades]
    assert after["coinbase"]["duplicates"] > before["coinbase"]["duplicates"]
    # OANDA's prices are a state, not a sequence: they resume.
    assert after["oanda"]["delivered"] > before["oanda"]["delivered"]


def test_a_publisher_that_stops_hands_over_and_the_next_goes_on_from_the_last_event(
    publishers, market_streams
):
    stack = publishers
    made_before = len(market_streams.binance_trades)
    market_streams.produce(80, rate_per_s=40)  # 2 s of trades
    wait_until(
        lambda: len(market_streams.binance_trades) >= made_before + 20, 10, "trades under way"
    )
    stack.stop(FIRST, signal.SIGTERM)  # a rollout replacing it: its leases are freed
    wait_until(
        lambda: all(f["publishing_here"] for f in feeds(stack, SECOND).values()),
        15,
        "the second instance publishing every venue",
    )
    wait_until(
        lambda: len(market_streams.binance_trades) >= made_before + 80, 15, "all trades made"
    )
    # The trades made between the two publishers were refilled from the last one published.
    wait_until(lambda: all_published(stack, market_streams), 20, "every trade published once")
    taken = feeds(stack, SECOND)
    assert taken["binanceus"]["publisher"] == SECOND and taken["binanceus"]["delivered"] > 0
    # OANDA's prices are a state, not replayed: the next ones come from the new publisher.
    market_streams.produce(5, rate_per_s=50)
    wait_until(lambda: feeds(stack, SECOND)["oanda"]["delivered"] > 0, 10, "OANDA prices")
