"""Service-side registration in the Redis registry (the gateway reads it via discovery).

Key gekko:registry:<service>:<instance_id> holds the instance JSON with a short TTL; a
heartbeat refreshes it, so an instance that dies silently disappears within REGISTRY_TTL_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from redis.asyncio import Redis

REGISTRY_PREFIX = "gekko:registry:"
REGISTRY_INDEX = "gekko:registry:index"
REGISTRY_TTL_S = 15
HEARTBEAT_INTERVAL_S = 5.0
# Until an instance's record says "ok" it beats this often, so it is routable (and its /health
# passes) within a fraction of a second of becoming ready, not a whole heartbeat later.
NOT_READY_INTERVAL_S = 0.5

log = logging.getLogger("gekko.registry")


def registry_key(service: str, instance_id: str) -> str:
    return f"{REGISTRY_PREFIX}{service}:{instance_id}"


def registration_record(
    service: str,
    instance_id: str,
    url: str,
    health: str,
    registered_at: float,
    now: float,
) -> dict[str, Any]:
    return {
        "service": service,
        "instance_id": instance_id,
        "url": url,
        "health": health,
        "registered_at": registered_at,
        "last_heartbeat": now,
    }


class RegistryHeartbeat:
    """Registers one instance and keeps its entry alive until stopped."""

    def __init__(
        self,
        redis: Redis,
        service: str,
        instance_id: str,
        url: str,
        health_probe: Callable[[], Awaitable[str]],
        *,
        interval_s: float = HEARTBEAT_INTERVAL_S,
        not_ready_interval_s: float = NOT_READY_INTERVAL_S,
        ttl_s: int = REGISTRY_TTL_S,
    ) -> None:
        self.redis = redis
        self.service = service
        self.instance_id = instance_id
        self.url = url
        self.health_probe = health_probe
        self.interval_s = interval_s
        self.not_ready_interval_s = not_ready_interval_s
        self.ttl_s = ttl_s
        self.key = registry_key(service, instance_id)
        self.registered_at = time.time()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        # The health the registry holds for this instance as far as we know: None before the
        # first write and after a failed one (the record may have expired meanwhile).
        self.published: str | None = None

    @property
    def registered_ready(self) -> bool:
        """True when the registry says this instance is ready, so the gateway may route to it."""
        return self.published == "ok"

    async def beat(self) -> None:
        health = await self.health_probe()
        record = registration_record(
            self.service, self.instance_id, self.url, health, self.registered_at, time.time()
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.key, orjson.dumps(record), ex=self.ttl_s)
            pipe.sadd(REGISTRY_INDEX, self.key)
            await pipe.execute()
        self.published = health

    async def tick(self) -> float:
        """One heartbeat that never raises (the instance keeps serving without Redis); returns
        the seconds until the next one."""
        try:
            await self.beat()
            if self._failing:
                log.info("registry heartbeat restored for %s", self.key)
            self._failing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self._failing:
                log.warning("registry heartbeat failed for %s: %s", self.key, exc)
            self._failing = True
            self.published = None
        return self.interval_s if self.registered_ready else self.not_ready_interval_s

    async def _run(self) -> None:
        while True:
            delay = await self.tick()
            await asyncio.sleep(delay)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"heartbeat:{self.key}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            async with asyncio.timeout(2):
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.delete(self.key)
                    pipe.srem(REGISTRY_INDEX, self.key)
                    await pipe.execute()
        except Exception as exc:
            log.warning("could not deregister %s: %s", self.key, exc)
