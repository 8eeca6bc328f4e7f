"""The eight business KPIs, maintained from events in Redis and read by every gateway process.

A KPI consumer group (run inside the gamification service) applies each event with one Lua
script: it marks the event id as seen (SET NX with a TTL) and, only if it was new, bumps the
counters, so a redelivered event is counted once and the update is atomic. Derived KPIs (fill
rate, latency p95, active users) are computed at read time from the raw state.

KPIs: orders executed, notional volume (USD), fill rate (filled / submitted), execution latency
p95 (ms), active users (distinct users active in the last 15 minutes), registrations, social
engagement (posts + follows + trade shares) and points awarded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from gekko import events as ev

PREFIX = "gekko:kpi:"
COUNTERS_KEY = PREFIX + "counters"
LATENCY_KEY = PREFIX + "latency_ms"
ACTIVE_KEY = PREFIX + "active_users"
SEEN_PREFIX = PREFIX + "seen:"
SEEN_TTL_S = 7 * 86_400
LATENCY_WINDOW = 1000  # p95 over the most recent executions
ACTIVE_WINDOW_S = 15 * 60

KPI_NAMES: tuple[str, ...] = (
    "orders_executed",
    "notional_volume_usd",
    "fill_rate",
    "execution_latency_p95_ms",
    "active_users",
    "registrations",
    "social_engagement",
    "points_awarded",
)

# KEYS: seen, counters, latency, active. ARGV: ttl, user, ts, latency, window, cutoff,
# then field/increment pairs. Returns 1 if applied, 0 for a duplicate.
_APPLY = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 7, #ARGV, 2 do redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) end
if ARGV[4] ~= '' then
  redis.call('LPUSH', KEYS[3], ARGV[4])
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[5]) - 1)
end
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[4], 'GT', ARGV[3], ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[6])
end
redis.call('HSET', KEYS[2], 'updated_at', ARGV[3])
return 1
"""


def p95(samples: Sequence[float]) -> float:
    """Nearest-rank 95th percentile (0 when there are no samples)."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = math.ceil(0.95 * len(ordered))
    return float(ordered[rank - 1])


def fill_rate(filled: int, submitted: int) -> float:
    """Filled / submitted, in [0, 1]; clamped because a fill may be counted before its order."""
    if submitted <= 0:
        return 0.0
    return min(1.0, filled / submitted)


def _cents(value: Any) -> int:
    return int((Decimal(str(value)) * 100).to_integral_value())


def _user(payload: dict[str, Any], key: str = "user_id") -> str:
    value = payload.get(key)
    return str(value) if value is not None else ""


def increments(event: ev.Event) -> tuple[dict[str, int], str, str]:
    """(counter increments, active user id or '', latency ms or '') that an event implies."""
    p = event.payload
    t = event.type
    if t == ev.ORDER_PLACED or t == ev.ORDER_REJECTED:
        return {"orders_submitted": 1}, _user(p), ""
    if t == ev.ORDER_EXECUTED:
        latency = p.get("latency_ms")
        return (
            {"orders_executed": 1, "notional_volume_cents": _cents(p.get("notional", 0))},
            _user(p),
            "" if latency is None else f"{float(latency):.3f}",
        )
    if t == ev.USER_REGISTERED:
        return {"registrations": 1}, _user(p), ""
    if t == ev.SOCIAL_POSTED:
        return {"social_posts": 1}, _user(p), ""
    if t == ev.SOCIAL_FOLLOWED:
        return {"social_follows": 1}, _user(p, "follower_id"), ""
    if t == ev.SOCIAL_TRADE_SHARED:
        return {"social_shares": 1}, "", ""  # the trade itself already made the user active
    if t == ev.POINTS_AWARDED:
        return {"points_awarded": int(p.get("points", 0))}, "", ""
    return {}, "", ""


def _epoch(occurred_at: str) -> float:
    try:
        return datetime.fromisoformat(occurred_at).timestamp()
    except ValueError:
        return time.time()


async def apply_event(redis: Redis, event: ev.Event) -> bool:
    """Count one event exactly once; False when it was already counted or is irrelevant."""
    counters, user, latency = increments(event)
    if not counters:
        return False
    ts = _epoch(event.occurred_at)
    args: list[Any] = [
        SEEN_TTL_S,
        user,
        f"{ts:.6f}",
        latency,
        LATENCY_WINDOW,
        f"{time.time() - ACTIVE_WINDOW_S:.6f}",
    ]
    for name, amount in counters.items():
        args += [name, amount]
    keys = [SEEN_PREFIX + event.event_id, COUNTERS_KEY, LATENCY_KEY, ACTIVE_KEY]
    return bool(await redis.eval(_APPLY, len(keys), *keys, *args))


def compute(counters: dict[str, int], latencies: Sequence[float], active: int) -> dict[str, Any]:
    """The eight KPIs (and their raw parts) from the stored state."""
    submitted = counters.get("orders_submitted", 0)
    executed = counters.get("orders_executed", 0)
    posts = counters.get("social_posts", 0)
    follows = counters.get("social_follows", 0)
    shares = counters.get("social_shares", 0)
    return {
        "orders_executed": executed,
        "notional_volume_usd": float(Decimal(counters.get("notional_volume_cents", 0)) / 100),
        "fill_rate": round(fill_rate(executed, submitted), 4),
        "execution_latency_p95_ms": round(p95(latencies), 3),
        "active_users": active,
        "registrations": counters.get("registrations", 0),
        "social_engagement": posts + follows + shares,
        "points_awarded": counters.get("points_awarded", 0),
        "orders_submitted": submitted,
        "social_posts": posts,
        "social_follows": follows,
        "social_shares": shares,
    }


async def read_kpis(redis: Redis) -> dict[str, Any]:
    """Current KPIs from Redis (the same numbers in every gateway process)."""
    now = time.time()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(COUNTERS_KEY)
        pipe.lrange(LATENCY_KEY, 0, LATENCY_WINDOW - 1)
        pipe.zcount(ACTIVE_KEY, now - ACTIVE_WINDOW_S, "+inf")
        raw, latencies, active = await pipe.execute()
    counters: dict[str, int] = {}
    updated_at = None
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else key
        if name == "updated_at":
            updated_at = float(value)
        else:
            counters[name] = int(value)
    kpis = compute(counters, [float(x) for x in latencies], int(active))
    kpis["updated_at"] = updated_at
    kpis["as_of"] = now
    return kpis


class KpiCollector(Collector):
    """Exports the latest KPI snapshot as gekko_kpi_* metrics (no per-user labels).

    prometheus_client collects synchronously, so the gateway refreshes `snapshot` from Redis
    in the background (see gekko.gateway.dashboard) and scrapes read the cached values.
    """

    def __init__(self) -> None:
        self.snapshot: dict[str, Any] | None = None

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        k = self.snapshot
        if k is None:
            return
        yield CounterMetricFamily(
            "gekko_kpi_orders_executed", "Orders executed (fills).", value=k["orders_executed"]
        )
        yield CounterMetricFamily(
            "gekko_kpi_orders_submitted",
            "Orders submitted (accepted or rejected by checks).",
            value=k["orders_submitted"],
        )
        yield CounterMetricFamily(
            "gekko_kpi_notional_volume_usd",
            "Notional volume executed, USD.",
            value=k["notional_volume_usd"],
        )
        yield GaugeMetricFamily(
            "gekko_kpi_fill_rate", "Filled / submitted orders (0..1).", value=k["fill_rate"]
        )
        yield GaugeMetricFamily(
            "gekko_kpi_execution_latency_p95_ms",
            "95th percentile order execution latency over the last 1000 executions, ms.",
            value=k["execution_latency_p95_ms"],
        )
        yield GaugeMetricFamily(
            "gekko_kpi_active_users",
            "Distinct users active in the last 15 minutes.",
            value=k["active_users"],
        )
        yield CounterMetricFamily(
            "gekko_kpi_registrations", "User registrations.", value=k["registrations"]
        )
        engagement = CounterMetricFamily(
            "gekko_kpi_social_engagement",
            "Social engagement events (posts, follows, trade shares).",
            labels=["kind"],
        )
        engagement.add_metric(["post"], k["social_posts"])
        engagement.add_metric(["follow"], k["social_follows"])
        engagement.add_metric(["trade_share"], k["social_shares"])
        yield engagement
        yield CounterMetricFamily(
            "gekko_kpi_points_awarded", "Gamification points awarded.", value=k["points_awarded"]
        )
