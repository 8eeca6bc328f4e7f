"""Rate limits shared by every gateway process: per user and per upstream service, in Redis.

Strategy: `limits`' moving window (MovingWindowRateLimiter). Its Redis storage takes an entry
with one Lua script (atomic: never read-then-write), and a moving window means "200 per
minute" holds for *any* 60 s, without the double burst a fixed window allows at its edges.

Round trips: the user's quota is taken first, so a request refused for the user never spends
the service's budget. `limits` has no batch call, so the user's take and the read of the
user's window (for the headers) go to Redis as one pipeline of limits' own two scripts on
limits' own keys; then, only if the user passed, the service's quota is taken. An admitted
request costs three scripts in two round trips on two pooled connections; one refused for the
user costs one round trip. (Profiled: each redis-py call's client-side work, not Redis, was
what cost; the pipeline replaces one call and a `gather` of two tasks.)

Headers follow draft-ietf-httpapi-ratelimit-headers-07: `RateLimit-Policy: 200;w=60, 1000;w=60`
lists both quotas; `RateLimit: limit=200, remaining=57, reset=23` reports the caller's own
quota, or the service's when that is the one refusing (reading the service window on every
request would cost another script per request for a number clients cannot act on).

Quotas can be swapped while serving (`set_quotas`, driven by gekko.dynconfig). A window's Redis
key leaves out the quota's size, so a changed limit applies to the requests already counted:
lowering 200 to 50 refuses a caller who made 60 calls in the last minute, at once.

If Redis is unreachable the limiter fails open (admits, without headers), logs the outage once
and counts it; it then leaves Redis alone for `backoff_s` so an outage costs no latency.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.aio.strategies import MovingWindowRateLimiter
from redis.exceptions import NoScriptError

log = logging.getLogger("gekko.ratelimit")


class _WindowItem(RateLimitItemPerSecond):
    """A per-second item whose storage key omits the amount, so a window outlives a new limit."""

    def key_for(self, *identifiers: bytes | str | int | float) -> str:
        parts = [k.decode() if isinstance(k, bytes) else str(k) for k in identifiers]
        return "/".join([self.namespace, *parts, str(self.multiples), "window"])


@dataclass(frozen=True)
class Quota:
    limit: int
    window_s: int

    def item(self, namespace: str) -> RateLimitItem:
        return _WindowItem(self.limit, self.window_s, namespace=namespace)


@dataclass(frozen=True)
class _Policy:
    """The quotas with their limits' items and headers: swapped as one value."""

    user: Quota
    service: Quota
    anonymous: Quota
    user_item: RateLimitItem
    service_item: RateLimitItem
    anonymous_item: RateLimitItem
    header: str
    anonymous_header: str

    @classmethod
    def of(cls, user: Quota, service: Quota, anonymous: Quota) -> _Policy:
        return cls(
            user,
            service,
            anonymous,
            user.item("gekko-user"),
            service.item("gekko-service"),
            anonymous.item("gekko-anonymous"),
            policy_header(user, service),
            policy_header(anonymous, service),
        )


@dataclass(frozen=True)
class Decision:
    allowed: bool
    # "user", "anonymous" (a caller without a token, per source address) or "service": the
    # quota reported (the refusing one when refused)
    scope: str
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
        anonymous: Quota | None = None,
        backoff_s: float = 1.0,
        timeout_s: float = 0.5,
        clock: Callable[[], float] = time.time,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self._policy = _Policy.of(user, service, anonymous or user)
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

    @property
    def user(self) -> Quota:
        return self._policy.user

    @property
    def service(self) -> Quota:
        return self._policy.service

    @property
    def anonymous(self) -> Quota:
        return self._policy.anonymous

    @property
    def policy(self) -> str:
        """The `RateLimit-Policy` header value of the current quotas (a signed-in caller)."""
        return self._policy.header

    def policy_for(self, *, anonymous: bool) -> str:
        """The `RateLimit-Policy` header value for a caller with or without a token."""
        return self._policy.anonymous_header if anonymous else self._policy.header

    def set_quotas(self, user: Quota, service: Quota, anonymous: Quota | None = None) -> None:
        """Swap the quotas; requests already being checked finish under the old ones."""
        anonymous = anonymous or self.anonymous
        if (user, service, anonymous) != (self.user, self.service, self.anonymous):
            self._policy = _Policy.of(user, service, anonymous)
            log.info(
                "rate limits now %s (user, service), %s without a token",
                self._policy.header,
                f"{anonymous.limit};w={anonymous.window_s}",
            )

    async def check(
        self, subject_key: str, service: str, *, anonymous: bool = False
    ) -> Decision | None:
        """Take one unit of the subject's quota (a user's, or a source address's without a
        token) and of the service's; None when Redis is unavailable (fail open)."""
        now = self.clock()
        if now < self._skip_until:
            return None
        try:
            decision = await self._check(self._policy, subject_key, service, now, anonymous)
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

    async def _check(
        self, p: _Policy, subject_key: str, service: str, now: float, anonymous: bool
    ) -> Decision:
        strategy, s_item, svc = self.strategy, p.service_item, p.service
        u_item, user = (p.anonymous_item, p.anonymous) if anonymous else (p.user_item, p.user)
        scope = "anonymous" if anonymous else "user"
        u_ok, u_reset_time, u_remaining = await self._take_and_read(u_item, subject_key)
        if not u_ok:
            reset = _reset(u_reset_time, now, user.window_s)
            return Decision(False, scope, user.limit, 0, reset, user.window_s)
        if not await strategy.hit(s_item, service):
            s_stats = await strategy.get_window_stats(s_item, service)
            reset = _reset(s_stats.reset_time, now, svc.window_s)
            return Decision(False, "service", svc.limit, 0, reset, svc.window_s)
        reset = _reset(u_reset_time, now, user.window_s)
        return Decision(True, scope, user.limit, u_remaining, reset, user.window_s)

    async def _take_and_read(self, item: RateLimitItem, key: str) -> tuple[bool, float, int]:
        """`strategy.hit` then `strategy.get_window_stats` in one round trip: the same two
        limits scripts (moving window) on the same key, sent as one redis-py pipeline."""
        # limits' redis-py bridge (implementation="redispy" above): its scripts and key prefix
        bridge = cast(RedispyBridge, self.storage.bridge)
        redis_key = bridge.prefixed_key(item.key_for(key))
        take, read = bridge.lua_acquire_moving_window, bridge.lua_moving_window
        expiry, amount = item.get_expiry(), item.amount
        timestamp = time.time()  # what limits' acquire_entry / get_moving_window use
        # Raw EVALSHA: a pipeline given Script objects sends SCRIPT EXISTS first, which would
        # cost the round trip this saves.
        pipe = bridge.get_connection().pipeline(transaction=False)
        pipe.evalsha(take.sha, 1, redis_key, timestamp, amount, expiry, 1)
        pipe.evalsha(read.sha, 1, redis_key, timestamp - expiry, amount)
        acquired, window = await pipe.execute(raise_on_error=False)
        if isinstance(acquired, NoScriptError) or isinstance(window, NoScriptError):
            # Redis restarted or flushed its scripts: limits' own calls load them again.
            # A take that did run is not repeated, so nothing is counted twice.
            if isinstance(acquired, NoScriptError):
                acquired = await self.strategy.hit(item, key)
            stats = await self.strategy.get_window_stats(item, key)
            return bool(acquired), stats.reset_time, stats.remaining
        for result in (acquired, window):
            if isinstance(result, Exception):
                raise result
        start, count = (float(window[0]), int(window[1])) if window else (timestamp, 0)
        return bool(acquired), start + expiry, amount - count

    async def close(self) -> None:
        bridge = getattr(self.storage, "bridge", None)
        client = getattr(bridge, "storage", None)
        if client is not None and hasattr(client, "aclose"):
            await client.aclose()


def _reset(reset_time: float, now: float, window_s: int) -> int:
    return min(window_s, max(0, math.ceil(reset_time - now)))
