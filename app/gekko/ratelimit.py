"""Rate limits shared by every gateway process: per user and per upstream service, in Redis.

Strategy: `limits`' moving window. A moving window means "200 per minute" holds for *any* 60 s,
without the double burst a fixed window allows at its edges.

One round trip: both quotas of a request are checked and taken by one Lua script (`_TAKE_BOTH`),
atomically, on limits' own keys and entries: windows counted by limits' scripts (an older
gateway during a rolling deploy) carry on. The subject's quota is looked at first; nothing is
taken unless both have room, so a request refused for either quota spends neither. (Before, the
user's take and read were one pipeline of limits' two scripts and the service's take a second
round trip: three scripts, two round trips, twice the gateway's CPU per request; see
docs/benchmarks.md.) gekko.script_batch runs the script by its hash and loads it again if Redis
lost it.

Headers follow draft-ietf-httpapi-ratelimit-headers-07: `RateLimit-Policy: 200;w=60, 1000;w=60`
lists both quotas; `RateLimit: limit=200, remaining=57, reset=23` reports the caller's own
quota, or the service's when that is the one refusing (the only time clients can act on it).

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
from redis.asyncio import Redis

from gekko.script_batch import ScriptBatcher

log = logging.getLogger("gekko.ratelimit")

# Both quotas of a request in one script, one round trip, atomic: limits' moving window (a list
# of timestamps per key, newest first, at most the limit long; its keys and entries, so windows
# counted before carry on) for the subject's key, then the service's. Nothing is taken unless
# both have room: a request refused for either quota spends neither. Returns the outcome, the
# entry whose expiry frees a unit of the quota reported (the subject's, or the refusing
# service's) and that quota's count.
#
# Each key is first settled: entries that left the window are trimmed off its old end, so the
# count is the list's length. At a steady rate only an entry or two leave per request: they
# are popped off the end one by one (O(1) each). After a quiet spell many may have left, and
# then the first entry still in the window is found by bisection (the list being newest first)
# and the rest trimmed at once. Either way a check is O(log n) at most, not a scan of every
# entry in the window as limits' own scripts do, which at a quota of 100,000 a minute cost
# Redis milliseconds per request; a trimmed entry is one limits' scripts would have ignored
# anyway. Each entry is trimmed once, by whichever request finds it expired.
_TAKE_BOTH = """
local now = tonumber(ARGV[1])
-- the count of the key's entries in the window, and its oldest entry still in it (or nil)
local function settle(key, window)
  local n = redis.call('llen', key)
  if n == 0 then return 0, nil end
  local horizon = now - window
  for _ = 1, 8 do
    local oldest = redis.call('lindex', key, -1)
    if tonumber(oldest) >= horizon then return n, oldest end
    redis.call('rpop', key)
    n = n - 1
    if n == 0 then return 0, nil end
  end
  local oldest = redis.call('lindex', key, -1)
  if tonumber(oldest) >= horizon then return n, oldest end
  local lo, hi = 0, n - 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if tonumber(redis.call('lindex', key, mid)) < horizon then hi = mid else lo = mid + 1 end
  end
  if lo == 0 then
    redis.call('del', key)
    return 0, nil
  end
  redis.call('ltrim', key, 0, lo - 1)
  return lo, redis.call('lindex', key, -1)
end
local function refused(outcome, key, count, limit)
  -- a unit frees up when the limit-th newest entry leaves the window
  return {outcome, redis.call('lindex', key, limit - 1), count}
end
local user_limit, user_window = tonumber(ARGV[2]), tonumber(ARGV[3])
local service_limit, service_window = tonumber(ARGV[4]), tonumber(ARGV[5])
local users, user_oldest = settle(KEYS[1], user_window)
if users >= user_limit then return refused(0, KEYS[1], users, user_limit) end
local services = settle(KEYS[2], service_window)
if services >= service_limit then return refused(1, KEYS[2], services, service_limit) end
-- Below its limit before this entry, a list stays at most its limit long: nothing to trim.
redis.call('lpush', KEYS[1], ARGV[1])
redis.call('expire', KEYS[1], user_window)
redis.call('lpush', KEYS[2], ARGV[1])
redis.call('expire', KEYS[2], service_window)
return {2, user_oldest or ARGV[1], users + 1}
"""
_REFUSED_BY_SUBJECT, _REFUSED_BY_SERVICE = 0, 1


class _WindowItem(RateLimitItemPerSecond):
    """A per-second item whose storage key omits the amount, so a window outlives a new limit."""

    def key_for(self, *identifiers: bytes | str | int | float) -> str:
        parts = [k.decode() if isinstance(k, bytes) else str(k) for k in identifiers]
        return "/".join([self.namespace, *parts, str(self.multiples), "window"])


@dataclass(frozen=True)
class Quota:
    limit: int
    window_s: int

    def __post_init__(self) -> None:
        # The script reads the window's oldest entry to say when a refused request may retry;
        # with no room at all there is none, and the limiter would fail open on the error.
        if self.limit < 1 or self.window_s < 1:
            raise ValueError(f"a quota needs a limit and a window of at least 1, got {self}")

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
        self.backoff_s = backoff_s
        self.clock = clock
        self.on_error = on_error
        self._skip_until = 0.0
        self._failing = False
        # The script's own client, without per-read timeouts: the batcher bounds each trip
        # (all the checks it carries) with one timer instead.
        self._client = Redis.from_url(redis_url, socket_connect_timeout=timeout_s)
        self._script = ScriptBatcher(self._client, _TAKE_BOTH, timeout_s=timeout_s)

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
        u_item, user = (p.anonymous_item, p.anonymous) if anonymous else (p.user_item, p.user)
        scope = "anonymous" if anonymous else "user"
        # limits' redis-py bridge (implementation="redispy" above): its key prefix and client
        bridge = cast(RedispyBridge, self.storage.bridge)
        keys = [
            bridge.prefixed_key(u_item.key_for(subject_key)),
            bridge.prefixed_key(p.service_item.key_for(service)),
        ]
        timestamp = time.time()  # what limits' own moving-window calls use
        args = [timestamp, user.limit, user.window_s, p.service.limit, p.service.window_s]
        # One round trip, shared with the checks of the same event-loop turn; the script is
        # loaded again if Redis lost it (nothing ran then).
        outcome, oldest, count = await self._script(keys, args)
        if outcome == _REFUSED_BY_SERVICE:
            svc = p.service
            reset = _reset(float(oldest) + svc.window_s, now, svc.window_s)
            return Decision(False, "service", svc.limit, 0, reset, svc.window_s)
        reset = _reset(float(oldest) + user.window_s, now, user.window_s)
        if outcome == _REFUSED_BY_SUBJECT:
            return Decision(False, scope, user.limit, 0, reset, user.window_s)
        return Decision(True, scope, user.limit, user.limit - int(count), reset, user.window_s)

    async def close(self) -> None:
        await self._script.close()
        await self._client.aclose()
        bridge = getattr(self.storage, "bridge", None)
        client = getattr(bridge, "storage", None)
        if client is not None and hasattr(client, "aclose"):
            await client.aclose()


def _reset(reset_time: float, now: float, window_s: int) -> int:
    return min(window_s, max(0, math.ceil(reset_time - now)))
