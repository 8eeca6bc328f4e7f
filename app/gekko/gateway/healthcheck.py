"""Active health checks: poll `GET /health` of every known instance on a fixed interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp

from gekko.gateway.discovery import Instance, ServiceRegistryCache
from gekko.gateway.outlier import HealthCheckPolicy

log = logging.getLogger("gekko.gateway.healthcheck")


class ActiveHealthChecker:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        cache: ServiceRegistryCache,
        policy: HealthCheckPolicy,
    ) -> None:
        self.session = session
        self.cache = cache
        self.policy = policy
        self._timeout = aiohttp.ClientTimeout(total=policy.timeout_s)
        self._task: asyncio.Task[None] | None = None

    async def _probe(self, inst: Instance) -> bool:
        try:
            async with self.session.get(f"{inst.url}/health", timeout=self._timeout) as resp:
                await resp.read()
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def check_once(self) -> None:
        instances = self.cache.all_instances()
        results = await asyncio.gather(*(self._probe(i) for i in instances))
        for inst, passed in zip(instances, results, strict=True):
            flipped = self.policy.apply(self.cache.host(inst.url), passed)
            if flipped is not None:
                log.warning(
                    "instance %s of %s is now %s (active health check)",
                    inst.url,
                    inst.service,
                    "healthy" if flipped else "unhealthy",
                )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.policy.interval_s)
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("health check round failed")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-health-checks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
