"""Service discovery for the gateway.

`ServiceRegistryCache` is pure and in-memory: a lookup never touches Redis, it just picks the
next healthy instance round-robin. `RedisDiscovery` refreshes that cache from the Redis registry
in the background; when Redis is down or a service has no live registration, the static backend
(GEKKO_STATIC_SERVICES) is used instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from gekko.config import DOMAIN_SERVICES
from gekko.registry import REGISTRY_INDEX, REGISTRY_TTL_S

log = logging.getLogger("gekko.discovery")

HEALTHY = "ok"
STATIC = "static"


@dataclass(frozen=True)
class Instance:
    service: str
    instance_id: str
    url: str
    health: str
    last_heartbeat: float | None
    source: str = "redis"

    def as_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "url": self.url,
            "health": self.health,
            "last_heartbeat": self.last_heartbeat,
            "source": self.source,
        }


def parse_record(raw: bytes | str | None) -> Instance | None:
    """Parse one registry value; None for missing (expired) or malformed entries."""
    if raw is None:
        return None
    try:
        data = orjson.loads(raw)
        return Instance(
            service=str(data["service"]),
            instance_id=str(data["instance_id"]),
            url=str(data["url"]).rstrip("/"),
            health=str(data.get("health", "unknown")),
            last_heartbeat=float(data["last_heartbeat"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


class ServiceRegistryCache:
    def __init__(
        self,
        services: Iterable[str] = DOMAIN_SERVICES,
        static: dict[str, list[str]] | None = None,
        *,
        stale_after_s: float = REGISTRY_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.services = tuple(services)
        self.stale_after_s = stale_after_s
        self.clock = clock
        self._dynamic: dict[str, list[Instance]] = {s: [] for s in self.services}
        self._static: dict[str, list[Instance]] = {
            name: [
                Instance(name, f"static-{i}", url.rstrip("/"), STATIC, None, source="static")
                for i, url in enumerate(urls)
            ]
            for name, urls in (static or {}).items()
        }
        self._counters: dict[str, itertools.count[int]] = {
            s: itertools.count() for s in self.services
        }
        self._ejected_until: dict[str, float] = {}
        self.redis_ok = False
        self.last_refresh: float | None = None

    # -- updates (from the refresher) ---------------------------------------------------
    def replace(self, instances: Iterable[Instance]) -> None:
        fresh: dict[str, list[Instance]] = {s: [] for s in self.services}
        for inst in instances:
            if inst.service in fresh:
                fresh[inst.service].append(inst)
        for items in fresh.values():
            items.sort(key=lambda i: i.instance_id)  # stable order keeps round-robin fair
        self._dynamic = fresh
        self.redis_ok = True
        self.last_refresh = self.clock()

    def mark_redis_down(self) -> None:
        self.redis_ok = False

    def eject(self, url: str, seconds: float) -> None:
        """Passive outlier ejection: skip an instance that just failed to connect."""
        self._ejected_until[url] = self.clock() + seconds

    # -- lookups (hot path: pure memory) -------------------------------------------------
    def _fresh(self, inst: Instance, now: float) -> bool:
        return inst.last_heartbeat is not None and now - inst.last_heartbeat <= self.stale_after_s

    def registered(self, service: str) -> list[Instance]:
        now = self.clock()
        return [i for i in self._dynamic.get(service, []) if self._fresh(i, now)]

    def healthy_dynamic(self, service: str) -> list[Instance]:
        return [i for i in self.registered(service) if i.health == HEALTHY]

    def static(self, service: str) -> list[Instance]:
        return list(self._static.get(service, []))

    def routable(self, service: str) -> list[Instance]:
        """Healthy registered instances, else the static ones; ejected ones left out if possible."""
        candidates = self.healthy_dynamic(service) or self.static(service)
        now = self.clock()
        live = [i for i in candidates if self._ejected_until.get(i.url, 0.0) <= now]
        # Never eject everything: a guess beats a guaranteed 503.
        return live or candidates

    def pick(self, service: str, exclude: Iterable[str] = ()) -> Instance | None:
        excluded = set(exclude)
        candidates = [i for i in self.routable(service) if i.url not in excluded]
        if not candidates:
            return None
        counter = self._counters.setdefault(service, itertools.count())
        return candidates[next(counter) % len(candidates)]

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Every known service -> its registered (non-stale) instances plus static ones."""
        return {
            s: [i.as_dict() for i in self.registered(s)] + [i.as_dict() for i in self.static(s)]
            for s in self.services
        }

    def counts(self) -> dict[str, dict[str, int]]:
        """service -> health -> number of instances (for the metrics gauge)."""
        result: dict[str, dict[str, int]] = {}
        for s in self.services:
            per: dict[str, int] = {}
            for inst in self.registered(s) + self.static(s):
                per[inst.health] = per.get(inst.health, 0) + 1
            result[s] = per
        return result


class RedisDiscovery:
    """Refreshes a ServiceRegistryCache from the Redis registry every `interval_s`."""

    def __init__(self, redis: Redis, cache: ServiceRegistryCache, interval_s: float = 1.0):
        self.redis = redis
        self.cache = cache
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def refresh_once(self) -> None:
        keys = sorted(await self.redis.smembers(REGISTRY_INDEX))
        values = await self.redis.mget(keys) if keys else []
        instances = []
        expired = []
        for key, raw in zip(keys, values, strict=True):
            inst = parse_record(raw)
            if inst is None:
                expired.append(key)
            else:
                instances.append(inst)
        if expired:
            # Keys whose TTL ran out (an instance died without deregistering).
            await self.redis.srem(REGISTRY_INDEX, *expired)
        self.cache.replace(instances)

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh_once()
                if self._failing:
                    log.info("registry refresh restored")
                self._failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._failing:  # log the transition, not every second of an outage
                    log.warning("registry refresh failed, using last known/static: %s", exc)
                self._failing = True
                self.cache.mark_redis_down()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-discovery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
