import asyncio

import pytest

from gekko.ratelimit import Quota, RateLimiter, policy_header, ratelimit_header, storage_uri


def test_headers_follow_draft_07_syntax():
    assert policy_header(Quota(200, 60), Quota(1000, 60)) == "200;w=60, 1000;w=60"
    assert ratelimit_header(200, 57, 23) == "limit=200, remaining=57, reset=23"
    assert ratelimit_header(200, -3, -1) == "limit=200, remaining=0, reset=0"


def test_a_quota_without_room_is_refused_when_made_not_admitted_at_run_time():
    for limit, window in ((0, 60), (-1, 60), (200, 0)):
        with pytest.raises(ValueError, match="at least 1"):
            Quota(limit, window)
    assert Quota(1, 1).limit == 1


def test_storage_uri_maps_redis_urls_to_limits_async_schemes():
    assert storage_uri("redis://:pw@127.0.0.1:6379/0") == "async+redis://:pw@127.0.0.1:6379/0"
    assert storage_uri("rediss://h:1/0") == "async+rediss://h:1/0"
    assert storage_uri("unix:///run/redis.sock") == "async+redis+unix:///run/redis.sock"


def test_fails_open_when_redis_is_down_and_backs_off():
    errors: list[int] = []
    now = [1_000.0]

    async def run() -> list[object]:
        limiter = RateLimiter(
            "redis://127.0.0.1:1/0",
            Quota(1, 60),
            Quota(1, 60),
            clock=lambda: now[0],
            on_error=lambda: errors.append(1),
        )
        results = [await limiter.check("ip:1", "users") for _ in range(3)]
        now[0] += 2  # past the 1 s back-off: Redis is tried again
        results.append(await limiter.check("ip:1", "users"))
        await limiter.close()
        return results

    assert asyncio.run(run()) == [None, None, None, None]
    assert len(errors) == 2  # one attempt per back-off period, not one per request
