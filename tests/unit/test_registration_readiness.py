"""An instance is ready (its /health passes, so a rollout may drain the old ones) only once the
registry holds it as ready, so the gateway can already route to it."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi.testclient import TestClient

from gekko.config import load_settings
from gekko.registry import RegistryHeartbeat
from gekko.services.base import build_service_app

from .keys import TOKEN_ENV

ENV = {
    "GEKKO_DATABASE_URL": "postgresql://g:p@127.0.0.1:1/g",
    "GEKKO_REDIS_URL": "redis://127.0.0.1:1/0",
    **TOKEN_ENV,
}


class UpPool:
    async def fetchval(self, _query: str) -> int:
        return 1


class RecordingRedis:
    """Enough of redis.asyncio for a heartbeat: its pipelined writes are recorded, a ping works."""

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.fail = False

    async def ping(self) -> bool:
        return True

    def pipeline(self, transaction: bool = True) -> RecordingRedis.Pipeline:
        return RecordingRedis.Pipeline(self)

    class Pipeline:
        def __init__(self, redis: RecordingRedis) -> None:
            self.redis = redis
            self.value: bytes | None = None

        async def __aenter__(self) -> RecordingRedis.Pipeline:
            return self

        async def __aexit__(self, *exc: Any) -> None:
            return None

        def set(self, _key: str, value: bytes, ex: int) -> None:
            self.value = value

        def sadd(self, *_args: Any) -> None:
            pass

        def delete(self, *_args: Any) -> None:
            pass

        def srem(self, *_args: Any) -> None:
            pass

        async def execute(self) -> None:
            if self.redis.fail:
                raise ConnectionError("redis is down")
            if self.value is not None:
                self.redis.records.append(self.value)


def service_with(heartbeat: RegistryHeartbeat | None) -> TestClient:
    app = build_service_app("portfolio", load_settings("portfolio", ENV), [], {})
    # No lifespan: the datastores answer, and the heartbeat is what is under test.
    app.state.pool = UpPool()
    app.state.redis = RecordingRedis()
    app.state.heartbeat = heartbeat
    app.state.draining = False
    return TestClient(app)


def heartbeat(redis: RecordingRedis, healths: list[str]) -> RegistryHeartbeat:
    answers = iter(healths)

    async def probe() -> str:
        return next(answers, healths[-1])

    return RegistryHeartbeat(
        redis, "portfolio", "p-1", "http://127.0.0.1:9", probe,  # type: ignore[arg-type]
        interval_s=30, not_ready_interval_s=0.05,
    )  # fmt: skip


def test_health_fails_until_the_registry_holds_the_instance_as_ready():
    redis = RecordingRedis()
    beat = heartbeat(redis, ["degraded", "ok"])
    client = service_with(beat)

    unregistered = service_with(None).get("/health")
    assert unregistered.status_code == 503 and unregistered.json()["status"] == "registering"

    asyncio.run(beat.beat())  # published "degraded": the gateway would not route to it
    answer = client.get("/health")
    assert answer.status_code == 503 and answer.json()["status"] == "registering"

    asyncio.run(beat.beat())  # published "ok"
    answer = client.get("/health")
    assert answer.status_code == 200 and answer.json()["status"] == "ok"

    redis.fail = True  # the record may expire while the writes fail: not routable any more
    assert asyncio.run(beat.tick()) == 0.05  # and it retries soon
    assert client.get("/health").json()["status"] == "registering"


def test_a_not_ready_instance_beats_again_at_once_instead_of_a_whole_interval_later():
    redis = RecordingRedis()
    beat = heartbeat(redis, ["degraded", "degraded", "ok"])

    async def run_for(seconds: float) -> None:
        beat.start()
        await asyncio.sleep(seconds)
        await beat.stop()

    asyncio.run(run_for(0.5))
    healths = [b'"health":"%s"' % h for h in (b"degraded", b"degraded", b"ok")]
    assert len(redis.records) == 3, redis.records  # then the 30 s interval applies
    assert all(h in r for h, r in zip(healths, redis.records, strict=True))
