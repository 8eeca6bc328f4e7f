"""Event bus on Redis Streams: the event envelope and an at-least-once consumer-group reader.

Producers never XADD directly; they write to their schema's outbox (gekko.outbox) and a relay
moves rows here. Each producer has its own stream (gekko:events:<producer>). A consumer group
per consuming service reads them with XREADGROUP, acknowledges only after its handler has
committed, and reclaims entries left pending by dead consumers with XAUTOCLAIM. Handlers must be
idempotent (see `handle_once`): delivery is at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from gekko import tracing
from gekko.correlation import correlation_id_var

log = logging.getLogger("gekko.events")

STREAM_PREFIX = "gekko:events:"
DEAD_LETTER_STREAM = "gekko:events:dead"
STREAM_MAXLEN = 100_000  # approximate trim; consumers are expected to keep up

# Event types (producer in brackets).
USER_REGISTERED = "user.registered"  # users
ORDER_PLACED = "order.placed"  # trading: accepted, filled at once or resting
ORDER_EXECUTED = "order.executed"  # trading: a fill
ORDER_CANCELLED = "order.cancelled"  # trading
ORDER_REJECTED = "order.rejected"  # trading: funds/position check failed
VENUE_ORDER_FILLED = "venue_order.filled"  # trading: more of a venue order filled
SOCIAL_POSTED = "social.posted"  # social
SOCIAL_FOLLOWED = "social.followed"  # social
SOCIAL_TRADE_SHARED = "social.trade_shared"  # social, from order.executed
POINTS_AWARDED = "points.awarded"  # gamification


def stream_for(producer: str) -> str:
    return f"{STREAM_PREFIX}{producer}"


class EnvelopeError(ValueError):
    """A stream entry that is not a valid event (sent to the dead-letter stream)."""


@dataclass(frozen=True)
class Event:
    event_id: str
    type: str
    occurred_at: str
    payload: dict[str, Any]
    traceparent: str = ""
    correlation_id: str = ""
    producer: str = ""

    def fields(self) -> dict[str, str]:
        """Stream entry fields (all strings; payload as JSON)."""
        return {
            "event_id": self.event_id,
            "type": self.type,
            "occurred_at": self.occurred_at,
            "producer": self.producer,
            "payload": orjson.dumps(self.payload, default=str).decode(),
            "traceparent": self.traceparent,
            "correlation_id": self.correlation_id,
        }


def new_event(type_: str, payload: Mapping[str, Any], producer: str) -> Event:
    """An envelope stamped with a fresh id, the time, and the current trace and correlation."""
    carrier: dict[str, str] = {}
    tracing.inject(carrier)
    return Event(
        event_id=str(uuid.uuid4()),
        type=type_,
        occurred_at=datetime.now(UTC).isoformat(timespec="microseconds"),
        payload=dict(payload),
        traceparent=carrier.get("traceparent", ""),
        correlation_id=correlation_id_var.get() or "",
        producer=producer,
    )


def decode(fields: Mapping[bytes | str, bytes | str]) -> Event:
    data = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in fields.items()
    }
    try:
        event_id = str(uuid.UUID(data["event_id"]))
        payload = orjson.loads(data["payload"])
        type_ = data["type"]
    except (KeyError, ValueError, orjson.JSONDecodeError) as exc:
        raise EnvelopeError(f"malformed event entry: {exc}") from None
    if not isinstance(payload, dict) or not type_:
        raise EnvelopeError("malformed event entry: payload must be an object and type set")
    return Event(
        event_id=event_id,
        type=type_,
        occurred_at=data.get("occurred_at", ""),
        payload=payload,
        traceparent=data.get("traceparent", ""),
        correlation_id=data.get("correlation_id", ""),
        producer=data.get("producer", ""),
    )


Handler = Callable[[Event], Awaitable[None]]

# Schemas that have a processed_events table (identifiers cannot be bound parameters).
_PROCESSED_TABLES = {
    "portfolio": "portfolio.processed_events",
    "social": "social.processed_events",
    "gamification": "gamification.processed_events",
}


async def handle_once(
    pool: asyncpg.Pool,
    schema: str,
    consumer: str,
    event: Event,
    effect: Callable[[asyncpg.Connection, Event], Awaitable[None]],
) -> bool:
    """Run `effect` and record the event as processed in ONE transaction; False if seen before.

    The processed-events row and the effect commit together, so a redelivered event (crash
    before XACK, XAUTOCLAIM, a relay that sent twice) finds the row and changes nothing.
    """
    table = _PROCESSED_TABLES[schema]
    async with pool.acquire() as conn, conn.transaction():
        fresh = await conn.fetchval(
            f"INSERT INTO {table} (consumer, event_id) VALUES ($1, $2) "  # noqa: S608 - allowlisted table
            "ON CONFLICT DO NOTHING RETURNING true",
            consumer,
            uuid.UUID(event.event_id),
        )
        if not fresh:
            return False
        await effect(conn, event)
        return True


@dataclass
class EventConsumer:
    """One consumer of a consumer group over one or more streams; `dispatch` gets each event."""

    redis: Redis
    group: str
    name: str
    streams: Iterable[str]
    dispatch: Handler
    block_ms: int = 1000
    batch: int = 100
    claim_idle_ms: int = 30_000
    claim_every_s: float = 5.0
    max_attempts: int = 5
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _attempts: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.streams = tuple(self.streams)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self.group}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            try:
                # From id 0: events published before this group existed are still delivered.
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def _run(self) -> None:
        delay = 0.2
        groups_ready = False
        last_claim = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                if not groups_ready:
                    await self.ensure_groups()
                    groups_ready = True
                if loop.time() - last_claim >= self.claim_every_s:
                    await self.reclaim()
                    last_claim = loop.time()
                await self.poll()
                delay = 0.2
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                # NOGROUP: Redis restarted empty (or the stream was deleted); recreate groups.
                if "NOGROUP" in str(exc):
                    groups_ready = False
                    continue
                log.warning("consumer %s: %s", self.group, exc)
                await asyncio.sleep(delay)
            except (RedisError, OSError) as exc:
                log.warning("consumer %s: Redis unavailable (%s); retrying", self.group, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception as exc:  # e.g. PostgreSQL down: keep the consumer alive, back off
                log.warning("consumer %s: %s: %s; retrying", self.group, type(exc).__name__, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def poll(self) -> int:
        """Read and handle one batch of new entries; returns how many were handled."""
        reply = await self.redis.xreadgroup(
            self.group,
            self.name,
            {s: ">" for s in self.streams},
            count=self.batch,
            block=self.block_ms,
        )
        handled = 0
        for stream, entries in reply or []:
            for entry_id, fields in entries:
                await self._handle(as_text(stream), entry_id, fields)
                handled += 1
        return handled

    async def reclaim(self) -> int:
        """Take over entries another (dead) consumer left pending longer than claim_idle_ms."""
        handled = 0
        for stream in self.streams:
            start = "0-0"
            while True:
                reply = await self.redis.xautoclaim(
                    stream, self.group, self.name, self.claim_idle_ms, start_id=start, count=100
                )
                start, entries = as_text(reply[0]), reply[1]
                for entry_id, fields in entries:
                    if fields is None:  # deleted by MAXLEN trimming while pending
                        await self.redis.xack(stream, self.group, entry_id)
                        continue
                    await self._handle(stream, entry_id, fields)
                    handled += 1
                if start == "0-0":
                    break
        return handled

    async def _handle(self, stream: str, entry_id: bytes | str, fields: Any) -> None:
        key = as_text(entry_id)
        try:
            event = decode(fields)
        except EnvelopeError as exc:
            await self._dead_letter(stream, key, fields, str(exc))
            return
        parent = tracing.extract({"traceparent": event.traceparent} if event.traceparent else {})
        token = correlation_id_var.set(event.correlation_id or None)
        try:
            with tracing.start_span(
                f"{event.type} process",
                context=parent,
                kind=tracing.SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "redis",
                    "messaging.destination.name": stream,
                    "messaging.consumer.group.name": self.group,
                    "messaging.message.id": event.event_id,
                },
            ):
                await self.dispatch(event)
                # One line per handled event, inside the span: it carries the trace id.
                log.info(
                    "consumed %s",
                    event.type,
                    extra={
                        "fields": {
                            "event_id": event.event_id,
                            "event_type": event.type,
                            "consumer_group": self.group,
                        }
                    },
                )
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
            raise  # infrastructure: leave pending, the loop backs off and XAUTOCLAIM retries
        except Exception as exc:
            attempts = self._attempts.get(key, 0) + 1
            self._attempts[key] = attempts
            log.exception(
                "consumer %s failed on %s (%s), attempt %d", self.group, key, event.type, attempts
            )
            if attempts >= self.max_attempts:
                await self._dead_letter(stream, key, fields, f"{type(exc).__name__}: {exc}")
                self._attempts.pop(key, None)
            return  # stays pending; reclaimed after claim_idle_ms
        finally:
            correlation_id_var.reset(token)
        self._attempts.pop(key, None)
        await self.redis.xack(stream, self.group, entry_id)

    async def _dead_letter(self, stream: str, entry_id: str, fields: Any, reason: str) -> None:
        log.error(
            "consumer %s: dead-lettering %s from %s: %s", self.group, entry_id, stream, reason
        )
        copy = {as_text(k): v for k, v in dict(fields or {}).items()}
        copy.update({"dead.stream": stream, "dead.group": self.group, "dead.reason": reason[:500]})
        await self.redis.xadd(DEAD_LETTER_STREAM, copy, maxlen=10_000, approximate=True)
        await self.redis.xack(stream, self.group, entry_id)


def as_text(value: bytes | str) -> str:
    """A Redis reply's bytes (or a str already) as text."""
    return value.decode() if isinstance(value, bytes) else value


def dispatcher(handlers: Mapping[str, Handler]) -> Handler:
    """Route by event type; types a consumer does not care about are acknowledged and skipped."""

    async def dispatch(event: Event) -> None:
        handler = handlers.get(event.type)
        if handler is not None:
            await handler(event)

    return dispatch
