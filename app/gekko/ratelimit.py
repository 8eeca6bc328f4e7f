"""Rate limits shared by every gateway process: per user and per upstream service, in Redis.

Strategy: `limits`' moving window (MovingWindowRateLimiter). Its Redis storage takes an entry
with one Lua script (atomic: never read-then-write), and a moving window means "200 per
minute" holds for *any* 60 s, without the double burst a fixed window allows at its edges.

Round trips: the user's quota is taken first, so a request refused for the user never spends
the service's budget; then the service's quota is taken while the user's window is read (for
the headers), concurrently: an admitted request costs three scripts in two round trips.
(`limits` has no multi-key call, so this is as few as it allows.)

Headers follow draft-ietf-httpapi-ratelimit-headers-07: `RateLimit-Policy: 200;w=60, 1000;w=60`
lists both quotas; `RateLimit: limit=200, remaining=57, reset=23` reports the caller's own
quota, or the service's when that is the one refusing (reading the service window on every
request would cost another script per request for a number clients cannot act on).

If Redis is unreachable the limiter fails open (admits, without headers), logs the outage once
and counts it; it then leaves Redis alone for `backoff_s` so an outage costs no latency.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

log = logging.getLogger("gekko.ratelimit")


@dataclass(frozen=True)
class Quota:
    limit: int
    window_s: int

    def item(self, namespace: str) -> RateLimitItem:
        return RateLimitItemPerSecond(self.limit, self.window_s, namespace=namespace)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    scope: str  # "user" or "service": the quota reported (the refusing one when refused)
    limit: int
    remaining: int
    reset_s: int  # seconds until a unit of that quota frees up
    window_s: int


def policy_header(*quotas: Quota) -> str:
    return ", ".join(f"{q.limit};w={q.window_s}" for q in quotas)


def ratelimit_header(limit: int, remaining: int, reset_s: int) -> str:
    return f"limit={limit}, remaining={max(0, remaining)}, reset={max(0, reset_s)}"


def storage_uri(redis_url: str) -> str:
    """limits' async URI for a redis-py URL (redis://, rediss://, unix://)."""
    if redis_url.startswith("unix://"):
        return "async+redis+unix://" + redis_url[len("unix://") :]
    return "async+" + redis_url


class RateLimiter:
    def __init__(
        self,
        redis_url: str,
        user: Quota,
        service: Quota,
        *,
        backoff_s: float = 1.0,
        timeout_s: float = 0.5,
        clock: Callable[[], float] = time.time,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.user = user
        self.service = service
        self.policy = policy_header(user, service)
        self._user_item = user.item("gekko-user")
        self._service_item = service.item("gekko-service")
        self.storage = RedisStorage(
            storage_uri(redis_url),
            implementation="redispy",
            key_prefix="gekko:ratelimit",
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
        self.strategy = MovingWindowRateLimiter(self.storage)
        self.backoff_s = backoff_s
        self.clock = clock
        self.on_error = on_error
        self._skip_until = 0.0
        self._failing = False

    async def check(self, user_key: str, service: str) -> Decision | None:
        """Take one unit of both quotas; None when Redis is unavailable (fail open)."""
        now = self.clock()
        if now < self._skip_until:
            return None
        try:
            decision = await self._check(user_key, service, now)
        except Exception as exc:  # redis errors, timeouts, limits' StorageError
            self._skip_until = now + self.backoff_s
            if self.on_error is not None:
                self.on_error()
            if not self._failing:
                log.warning("rate limiter storage unavailable, admitting requests: %s", exc)
            self._failing = True
            return None
        if self._failing:
            log.info("rate limiter storage available again")
            self._failing = False
        return decision

    async def _check(self, user_key: str, service: str, now: float) -> Decision:
        strategy, u_item, s_item = self.strategy, self._user_item, self._service_item
        if not await strategy.hit(u_item, user_key):
            stats = await strategy.get_window_stats(u_item, user_key)
            reset = _reset(stats.reset_time, now, self.user.window_s)
            return Decision(False, "user", self.user.limit, 0, reset, self.user.window_s)
        s_ok, u_stats = await asyncio.gather(
            strategy.hit(s_item, service), strategy.get_window_stats(u_item, user_key)
        )
        if not s_ok:
            s_stats = await strategy.get_window_stats(s_item, service)
            reset = _reset(s_stats.reset_time, now, self.service.window_s)
            return Decision(False, "service", self.service.limit, 0, reset, self.service.window_s)
        reset = _reset(u_stats.reset_time, now, self.user.window_s)
        return Decision(True, "user", self.user.limit, u_stats.remaining, reset, self.user.window_s)

    async def close(self) -> None:
        bridge = getattr(self.storage, "bridge", None)
        client = getattr(bridge, "storage", None)
        if client is not None and hasattr(client, "aclose"):
            await client.aclose()


def _reset(reset_time: float, now: float, window_s: int) -> int:
    return min(window_s, max(0, math.ceil(reset_time - now)))
