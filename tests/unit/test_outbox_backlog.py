"""The outbox relay's backlog gauge: counted by the relay loop, at most every backlog_every_s."""

from __future__ import annotations

import asyncio

import asyncpg
from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError

from gekko.outbox import OutboxRelay


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Pool:
    """Answers the backlog count; relay_once is replaced in these tests."""

    def __init__(self, pending: int) -> None:
        self.pending = pending
        self.queries: list[str] = []
        self.fail = False

    async def fetchval(self, sql: str) -> int:
        self.queries.append(sql)
        if self.fail:
            raise asyncpg.InterfaceError("pool is closing")
        return self.pending


def relay(pool: Pool, registry: CollectorRegistry | None, clock: Clock) -> OutboxRelay:
    return OutboxRelay(
        pool,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        "trading",
        interval_s=0.001,
        registry=registry,
        backlog_every_s=5.0,
        clock=clock,
    )


def pending(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("gekko_outbox_pending_events")


def test_backlog_is_counted_over_unsent_rows_at_most_every_interval():
    registry, clock, pool = CollectorRegistry(), Clock(), Pool(pending=7)
    r = relay(pool, registry, clock)
    asyncio.run(r.measure_backlog())
    assert pending(registry) == 7
    assert pool.queries == ["SELECT count(*) FROM trading.outbox WHERE sent_at IS NULL"]
    pool.pending = 9
    clock.now += 4.9
    asyncio.run(r.measure_backlog())  # too soon: no query, the last value stays
    assert (pending(registry), len(pool.queries)) == (7, 1)
    clock.now += 0.1
    asyncio.run(r.measure_backlog())
    assert (pending(registry), len(pool.queries)) == (9, 2)


def test_a_failed_count_keeps_the_last_value_and_never_raises():
    registry, clock, pool = CollectorRegistry(), Clock(), Pool(pending=3)
    r = relay(pool, registry, clock)
    asyncio.run(r.measure_backlog())
    pool.fail, pool.pending = True, 50
    clock.now += 10
    asyncio.run(r.measure_backlog())
    assert pending(registry) == 3


def test_without_a_registry_nothing_is_counted():
    pool = Pool(pending=3)
    asyncio.run(relay(pool, None, Clock()).measure_backlog())
    assert pool.queries == []


def test_the_loop_counts_the_backlog_while_redis_is_down():
    registry, clock, pool = CollectorRegistry(), Clock(), Pool(pending=42)
    r = relay(pool, registry, clock)
    attempts = 0

    async def redis_down() -> int:
        nonlocal attempts
        attempts += 1
        clock.now += 5  # each retry is a backoff later
        raise RedisConnectionError("connection refused")

    r.relay_once = redis_down  # type: ignore[method-assign]

    async def scenario() -> None:
        r.start()
        for _ in range(200):
            await asyncio.sleep(0.01)
            if len(pool.queries) >= 2:
                break
        await r.stop()

    asyncio.run(scenario())
    assert attempts >= 2 and len(pool.queries) >= 2
    assert pending(registry) == 42
