"""Active health checks: poll `GET /health` (readiness) of every known instance.

Every `interval_s`; every `recovery_interval_s` instead while something is wrong (an instance
failing its checks or ejected, or a circuit open: Envoy's `unhealthy_interval`), and at once when
a circuit opens (`wake`), so a recovery is seen within about a second. An instance that passes
after failing is un-ejected (Envoy's `successful_active_health_check_uneject_host`). Every pass
is reported to `on_ready` with the time its round began: a circuit that opened before then
half-opens (gekko.breaker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

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
        *,
        on_ready: Callable[[Instance, float], None] | None = None,
        urgent: Callable[[], bool] | None = None,
    ) -> None:
        self.session = session
        self.cache = cache
        self.policy = policy
        self.on_ready = on_ready
        self.urgent = urgent  # besides the instances' own state: e.g. a circuit is open
        self._wake = asyncio.Event()
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
        began = time.monotonic()
        instances = self.cache.all_instances()
        results = await asyncio.gather(*(self._probe(i) for i in instances))
        for inst, passed in zip(instances, results, strict=True):
            host = self.cache.host(inst.url)
            was_failing = host.check_failures > 0 or not host.healthy
            flipped = self.policy.apply(host, passed)
            if passed and was_failing:
                host.ejected_until = 0.0
            if passed and self.on_ready is not None:
                self.on_ready(inst, began)
            if flipped is not None:
                log.warning(
                    "instance %s of %s is now %s (active health check)",
                    inst.url,
                    inst.service,
                    "healthy" if flipped else "unhealthy",
                )

    def next_interval(self) -> float:
        watch = self.cache.troubled() or (self.urgent is not None and self.urgent())
        return self.policy.recovery_interval_s if watch else self.policy.interval_s

    def wake(self) -> None:
        """Check now (a circuit just opened): its recovery is then seen from the start."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.next_interval())
            self._wake.clear()
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
