"""Transactional outbox: events are rows written in the producer's own transaction.

`add_event` inserts the envelope into <schema>.outbox on the caller's connection, so the
business row and its event commit or roll back together. `OutboxRelay` (a task in the producing
service) copies unsent rows to the producer's stream in id order and marks them sent. If Redis
is down the rows simply wait; the relay retries with backoff, so an acknowledged order's event
is never lost. A crash between XADD and the UPDATE re-sends a row: consumers deduplicate by
event_id.

Given a metrics registry, the relay also exports `gekko_outbox_pending_events`: the rows not yet
published, counted by the relay loop itself at most every `backlog_every_s` (over the partial
index of unsent rows), so a scrape never queries the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from prometheus_client import CollectorRegistry, Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gekko.events import STREAM_MAXLEN, Event, new_event, stream_for

log = logging.getLogger("gekko.outbox")

# Producers with an outbox table; identifiers cannot be bound, so only these are accepted.
OUTBOX_TABLES = {
    "users": "users.outbox",
    "trading": "trading.outbox",
    "social": "social.outbox",
    "gamification": "gamification.outbox",
}
SENT_RETENTION = "1 day"
# How often the relay counts its unsent rows for the backlog gauge (a scrape is every 15 s).
BACKLOG_EVERY_S = 5.0


async def add_event(
    conn: asyncpg.Connection, producer: str, type_: str, payload: Mapping[str, Any]
) -> Event:
    """Write an event to the producer's outbox inside the caller's transaction."""
    table = OUTBOX_TABLES[producer]
    event = new_event(type_, payload, producer)
    await conn.execute(
        f"INSERT INTO {table} "  # noqa: S608 - allowlisted table name
        "(event_id, type, occurred_at, payload, traceparent, correlation_id) "
        "VALUES ($1, $2, $3::timestamptz, $4::jsonb, $5, $6)",
        uuid.UUID(event.event_id),
        event.type,
        _parse_ts(event.occurred_at),
        orjson.dumps(event.payload, default=str).decode(),
        event.traceparent or None,
        event.correlation_id or None,
    )
    return event


def _parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


class OutboxRelay:
    """Moves a producer's unsent outbox rows to its stream, in order, with retry on failure."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis,
        producer: str,
        *,
        batch: int = 200,
        interval_s: float = 0.25,
        registry: CollectorRegistry | None = None,
        backlog_every_s: float = BACKLOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.producer = producer
        self.table = OUTBOX_TABLES[producer]
        self.stream = stream_for(producer)
        self.batch = batch
        self.interval_s = interval_s
        self.backlog: Gauge | None = None
        if registry is not None:
            self.backlog = Gauge(
                "gekko_outbox_pending_events",
                "Outbox rows not yet published to the producer's stream (counted by the relay).",
                registry=registry,
            )
        self.backlog_every_s = backlog_every_s
        self.clock = clock
        self._measured_at: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Relay now instead of at the next poll (called after a commit that added events)."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.producer}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def relay_once(self) -> int:
        """Send one batch; returns the number of rows sent (0 when nothing is pending)."""
        async with self.pool.acquire() as conn, conn.transaction():
            # SKIP LOCKED: several instances of a service can relay without sending a row twice.
            rows = await conn.fetch(
                "SELECT id, event_id, type, occurred_at, payload, traceparent, correlation_id "  # noqa: S608 - constant SQL
                f"FROM {self.table} WHERE sent_at IS NULL "  # noqa: S608 - allowlisted table
                "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self.batch,
            )
            if not rows:
                return 0
            async with self.redis.pipeline(transaction=False) as pipe:
                for row in rows:
                    event = Event(
                        event_id=str(row["event_id"]),
                        type=row["type"],
                        occurred_at=row["occurred_at"].isoformat(timespec="microseconds"),
                        payload=orjson.loads(row["payload"]),
                        traceparent=row["traceparent"] or "",
                        correlation_id=row["correlation_id"] or "",
                        producer=self.producer,
                    )
                    pipe.xadd(self.stream, event.fields(), maxlen=STREAM_MAXLEN, approximate=True)
                await pipe.execute()
            await conn.execute(
                f"UPDATE {self.table} SET sent_at = now() WHERE id = ANY($1::bigint[])",  # noqa: S608
                [row["id"] for row in rows],
            )
            return len(rows)

    async def measure_backlog(self) -> None:
        """Count unsent rows into the gauge, unless counted less than `backlog_every_s` ago.
        A failed count leaves the last value (the datastore alerts say why)."""
        if self.backlog is None:
            return
        now = self.clock()
        if self._measured_at is not None and now - self._measured_at < self.backlog_every_s:
            return
        self._measured_at = now
        try:
            pending = await self.pool.fetchval(
                f"SELECT count(*) FROM {self.table} WHERE sent_at IS NULL"  # noqa: S608 - allowlisted
            )
        except Exception as exc:  # a gauge must never stop the relay
            log.debug("outbox relay %s: backlog not counted: %s", self.producer, exc)
            return
        self.backlog.set(pending)

    async def purge_sent(self) -> None:
        await self.pool.execute(
            f"DELETE FROM {self.table} "  # noqa: S608 - allowlisted table
            f"WHERE sent_at < now() - interval '{SENT_RETENTION}'"
        )

    async def _run(self) -> None:
        delay = self.interval_s
        cycles = 0
        while True:
            self._wake.clear()  # before reading, so a commit during the read wakes the next one
            sent = 0
            try:
                sent = await self.relay_once()
                delay = self.interval_s
                if sent < self.batch:
                    cycles += 1
                    if cycles % 2400 == 0:  # about every 10 minutes at the default interval
                        await self.purge_sent()
            except asyncio.CancelledError:
                raise
            except (
                RedisError,
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,  # a connection PostgreSQL's shutdown ended under it
            ) as exc:
                log.warning("outbox relay %s: %s; rows stay queued", self.producer, exc)
                delay = min(max(delay, 0.25) * 2, 5.0)
            except Exception:  # never let the relay die: queued events would wait forever
                log.exception("outbox relay %s failed; retrying", self.producer)
                delay = 5.0
            await self.measure_backlog()  # also while Redis is down: that is when it grows
            if sent == self.batch:
                continue  # more waiting: drain without sleeping
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
