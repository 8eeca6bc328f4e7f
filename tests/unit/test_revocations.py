"""A verifier's copy of the ended sessions: refreshed at most once a second, never a queue."""

import asyncio
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from gekko.security.revocations import RevokedSessions


class SlowRedis:
    def __init__(self, delay: float, members: list[bytes], fail: bool = False) -> None:
        self.delay, self.members, self.fail, self.calls = delay, members, fail, 0

    async def zrangebyscore(self, key, low, high):
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RedisConnectionError("down")
        return self.members


def test_an_ended_session_is_seen_and_others_are_not():
    revoked = RevokedSessions(SlowRedis(0, [b"s-1"]))
    assert asyncio.run(revoked.contains("s-1")) is True
    assert asyncio.run(revoked.contains("s-2")) is False


def test_requests_during_a_slow_fetch_answer_from_the_copy_instead_of_queueing():
    redis = SlowRedis(0.3, [b"s-1"])
    revoked = RevokedSessions(redis, refresh_s=0.0)

    async def burst() -> tuple[float, list[bool]]:
        await revoked.contains("s-1")  # the first copy: requests wait for it once
        started = time.monotonic()
        seen = await asyncio.gather(*(revoked.contains("s-1") for _ in range(20)))
        return time.monotonic() - started, seen

    # One fetch at a time; twenty requests cost one fetch's time, not twenty.
    elapsed, seen = asyncio.run(burst())
    assert elapsed < 1.0 and all(seen)
    assert redis.calls == 2


def test_before_the_first_copy_requests_wait_for_it():
    revoked = RevokedSessions(SlowRedis(0.1, [b"s-1"]), refresh_s=60)

    async def first_burst() -> list[bool]:
        return await asyncio.gather(*(revoked.contains("s-1") for _ in range(5)))

    assert asyncio.run(first_burst()) == [True] * 5


def test_a_redis_outage_keeps_the_last_copy():
    redis = SlowRedis(0, [b"s-1"])
    revoked = RevokedSessions(redis, refresh_s=0.0)
    assert asyncio.run(revoked.contains("s-1")) is True
    redis.fail = True
    assert asyncio.run(revoked.contains("s-1")) is True


@pytest.mark.parametrize("members", [[], [b"other"]])
def test_nothing_ended_means_nothing_refused(members):
    assert asyncio.run(RevokedSessions(SlowRedis(0, members)).contains("s-1")) is False
