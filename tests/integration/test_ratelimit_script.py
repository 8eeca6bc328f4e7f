"""The rate limiter's one-script check against a real Redis (issue 15): both quotas of a request
in one round trip, exact across gateway processes, and the same windows as limits' own moving
window (old and new gateways share them during a rolling deploy)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from limits.aio.strategies import MovingWindowRateLimiter

from gekko.ratelimit import Quota, RateLimiter

pytestmark = pytest.mark.integration


def _limiters(redis_server, user: Quota, service: Quota, count: int = 2) -> list[RateLimiter]:
    return [RateLimiter(redis_server.url, user, service) for _ in range(count)]


async def _close(*limiters: RateLimiter) -> None:
    for limiter in limiters:
        await limiter.close()


def test_the_201st_request_of_a_user_is_refused_across_two_gateways(redis_server):
    user, service = f"user:{uuid.uuid4().hex}", f"svc-{uuid.uuid4().hex[:8]}"

    async def run():
        first, second = _limiters(redis_server, Quota(200, 60), Quota(1000, 60))
        try:
            decisions = [
                await (first if n % 2 else second).check(user, service) for n in range(201)
            ]
            key = first.storage.bridge.prefixed_key(first._policy.user_item.key_for(user))
            length = await first.storage.bridge.get_connection().llen(key)
        finally:
            await _close(first, second)
        return decisions, length

    decisions, length = asyncio.run(run())
    assert length == 200  # the refused request added nothing: a window is at most its limit
    assert all(d.allowed for d in decisions[:200])
    assert [d.remaining for d in decisions[:3]] == [199, 198, 197]
    refused = decisions[200]
    assert not refused.allowed and refused.scope == "user" and refused.remaining == 0
    assert (refused.limit, refused.window_s) == (200, 60) and 0 < refused.reset_s <= 60


def test_a_request_refused_for_the_service_spends_nothing_of_the_users_quota(redis_server):
    service = f"svc-{uuid.uuid4().hex[:8]}"
    users = [f"user:{uuid.uuid4().hex}" for _ in range(3)]

    async def run():
        (limiter,) = _limiters(redis_server, Quota(5, 60), Quota(4, 60), count=1)
        try:
            taken = [await limiter.check(users[n % 2], service) for n in range(4)]
            refused = await limiter.check(users[2], service)
            # A bigger service quota: the refused user's next request sees their whole quota.
            limiter.set_quotas(Quota(5, 60), Quota(100, 60))
            after = await limiter.check(users[2], service)
        finally:
            await _close(limiter)
        return taken, refused, after

    taken, refused, after = asyncio.run(run())
    assert all(d.allowed for d in taken)
    assert not refused.allowed and refused.scope == "service" and refused.limit == 4
    assert after.allowed and after.remaining == 4, "the refused request was not counted"


def test_windows_are_limits_own_and_a_lowered_limit_applies_at_once(redis_server):
    """What an older gateway (limits' scripts) counted, the one-script check counts too."""
    user, service = f"user:{uuid.uuid4().hex}", f"svc-{uuid.uuid4().hex[:8]}"

    async def run():
        (limiter,) = _limiters(redis_server, Quota(10, 60), Quota(1000, 60), count=1)
        try:
            older = MovingWindowRateLimiter(limiter.storage)
            for _ in range(6):
                assert await older.hit(limiter._policy.user_item, user)
            seen = await limiter.check(user, service)
            limiter.set_quotas(Quota(5, 60), Quota(1000, 60))
            lowered = await limiter.check(user, service)
            stats = await older.get_window_stats(limiter._policy.user_item, user)
        finally:
            await _close(limiter)
        return seen, lowered, stats

    seen, lowered, stats = asyncio.run(run())
    assert seen.allowed and seen.remaining == 3  # 6 from limits, this one, of 10
    assert not lowered.allowed and lowered.limit == 5
    assert stats.remaining == 0  # limits reads the 7 entries against the new limit of 5


def test_the_window_moves_and_a_lost_script_is_loaded_again(redis_server):
    user, service = f"user:{uuid.uuid4().hex}", f"svc-{uuid.uuid4().hex[:8]}"

    async def run():
        (limiter,) = _limiters(redis_server, Quota(3, 1), Quota(1000, 60), count=1)
        try:
            first = [await limiter.check(user, service) for _ in range(4)]
            # Redis restarted, or its scripts were flushed: the next check loads the script.
            await limiter.storage.bridge.get_connection().script_flush()
            await asyncio.sleep(1.1)
            later = await limiter.check(user, service)
        finally:
            await _close(limiter)
        return first, later

    started = time.monotonic()
    first, later = asyncio.run(run())
    assert [d.allowed for d in first] == [True, True, True, False]
    assert first[3].reset_s == 1
    assert later is not None and later.allowed and later.remaining == 2
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("expired", [3, 8, 9, 3000])
def test_expired_entries_are_trimmed_and_the_rest_counted_at_a_large_quota(redis_server, expired):
    """A quota of 100,000 a minute: the check counts only the entries still in the window and
    drops the others from the key, so neither Redis's time nor its memory grows with traffic
    that has left the window. A few expired entries are popped one by one, many (after a
    quiet spell) are found by bisection: both leave the same key."""
    user, service = f"user:{uuid.uuid4().hex}", f"svc-{uuid.uuid4().hex[:8]}"

    async def run():
        (limiter,) = _limiters(redis_server, Quota(100_000, 60), Quota(100_000, 60), count=1)
        try:
            key = limiter.storage.bridge.prefixed_key(limiter._policy.user_item.key_for(user))
            redis = limiter.storage.bridge.get_connection()
            now = time.time()
            # newest first, as limits pushes them: expired entries under 500 live ones
            await redis.lpush(key, *(now - 120 + i / 100 for i in range(expired)))
            await redis.lpush(key, *(now - 30 + i / 100 for i in range(500)))
            decision = await limiter.check(user, service)
            length = await redis.llen(key)
            oldest = float(await redis.lindex(key, -1))
        finally:
            await _close(limiter)
        return decision, length, oldest, now

    decision, length, oldest, now = asyncio.run(run())
    assert decision.allowed and decision.remaining == 100_000 - 501
    assert length == 501, f"the {expired} expired entries were not trimmed"
    assert oldest == pytest.approx(now - 30) and decision.reset_s == 30
