"""Service discovery for the gateway.

`ServiceRegistryCache` is pure and in-memory: a lookup never touches Redis, it just picks the
next healthy instance round-robin (rather than least-outstanding: instances are identical and
requests short, and it needs no bookkeeping on the hot path). `RedisDiscovery` refreshes that
cache from the Redis registry in the background; when Redis is down or a service has no live
registration, the static backend (GEKKO_STATIC_SERVICES) is used instead.
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
from gekko.gateway.outlier import EjectionPolicy, HostState
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
    registered_at: float | None = None

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
            registered_at=float(data["registered_at"]) if data.get("registered_at") else None,
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


class ServiceRegistryCache:
    """Every known instance per service plus the gateway's own view of each (HostState).

    `pick` is the hot path: pure memory, round-robin over instances that are registered healthy
    (else static), pass active health checks and are not ejected. If that leaves none, it
    routes over all candidates (Envoy's "panic" mode): a guess beats a guaranteed 503.
    """

    def __init__(
        self,
        services: Iterable[str] = DOMAIN_SERVICES,
        static: dict[str, list[str]] | None = None,
        *,
        stale_after_s: float = REGISTRY_TTL_S,
        clock: Callable[[], float] = time.time,
        ejection: EjectionPolicy | None = None,
    ) -> None:
        self.services = tuple(services)
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.ejection = ejection or EjectionPolicy()
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
        self._hosts: dict[str, HostState] = {}
        self._registrations: dict[str, float | None] = {}
        self.redis_ok = False
        self.last_refresh: float | None = None

    # -- updates (from the refresher, health checker and proxy) ----------------------------
    def replace(self, instances: Iterable[Instance]) -> None:
        fresh: dict[str, list[Instance]] = {s: [] for s in self.services}
        for inst in instances:
            if inst.service in fresh:
                fresh[inst.service].append(inst)
        for items in fresh.values():
            items.sort(key=lambda i: i.instance_id)  # stable order keeps round-robin fair
        self._dynamic = fresh
        for items in fresh.values():
            for inst in items:
                # A new process registered at a known address (a replaced instance on the same
                # port): it starts with a clean record, not its predecessor's failures.
                previous = self._registrations.get(inst.url, inst.registered_at)
                if previous != inst.registered_at:
                    self._hosts.pop(inst.url, None)
                self._registrations[inst.url] = inst.registered_at
        known = {i.url for items in fresh.values() for i in items}
        known.update(i.url for items in self._static.values() for i in items)
        for url in [u for u in self._hosts if u not in known]:
            del self._hosts[url]  # forget instances that left the registry
        self.redis_ok = True
        self.last_refresh = self.clock()

    def mark_redis_down(self) -> None:
        self.redis_ok = False

    def host(self, url: str) -> HostState:
        state = self._hosts.get(url)
        if state is None:
            state = self._hosts[url] = HostState()
        return state

    def eject(self, url: str, seconds: float) -> None:
        """Eject an instance for `seconds` regardless of policy (operator action, tests)."""
        self.host(url).ejected_until = self.clock() + seconds

    def troubled(self) -> bool:
        """Is any known instance failing its checks, unhealthy or ejected?"""
        now = self.clock()
        return any(
            h.check_failures or not h.healthy or h.ejected(now) for h in self._hosts.values()
        )

    def record_outcome(self, service: str, url: str, failed: bool) -> bool:
        """Passive outlier detection on one upstream attempt; True if `url` was just ejected."""
        host = self.host(url)
        if not failed:
            host.consecutive_failures = 0
            return False
        peers = [self.host(i.url) for i in self.candidates(service)]
        if host not in peers:
            peers.append(host)
        return self.ejection.record(host, peers, True, self.clock())

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

    def candidates(self, service: str) -> list[Instance]:
        """Registered-healthy instances, else the static ones."""
        return self.healthy_dynamic(service) or self.static(service)

    def all_instances(self) -> list[Instance]:
        """Every registered (non-stale) and static instance: what the health checker polls."""
        seen: dict[str, Instance] = {}
        for s in self.services:
            for inst in self.registered(s) + self.static(s):
                seen.setdefault(inst.url, inst)
        return list(seen.values())

    def routable(self, service: str) -> list[Instance]:
        """Candidates that pass active checks and are not ejected; all candidates if none do."""
        candidates = self.candidates(service)
        now = self.clock()
        hosts = self._hosts
        live = [
            i
            for i in candidates
            if (h := hosts.get(i.url)) is None or (h.healthy and h.ejected_until <= now)
        ]
        return live or candidates

    def pick(self, service: str, exclude: Iterable[str] = ()) -> Instance | None:
        candidates = self.routable(service)
        if exclude:
            excluded = set(exclude)
            candidates = [i for i in candidates if i.url not in excluded]
        if not candidates:
            return None
        counter = self._counters.setdefault(service, itertools.count())
        return candidates[next(counter) % len(candidates)]

    def _describe(self, inst: Instance, now: float) -> dict[str, Any]:
        entry = inst.as_dict()
        host = self._hosts.get(inst.url)
        entry.update((host or HostState()).as_dict(now))
        entry["routable"] = entry["health"] in (HEALTHY, STATIC) and (
            host is None or (host.healthy and not host.ejected(now))
        )
        return entry

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Every known service -> its registered (non-stale) and static instances, with the
        gateway's view: active health, ejection and passive failure count."""
        now = self.clock()
        return {
            s: [self._describe(i, now) for i in self.registered(s) + self.static(s)]
            for s in self.services
        }

    def state_of(self, inst: Instance, now: float) -> str:
        """One label per instance for the metrics gauge: ejected, unhealthy, or registry health."""
        host = self._hosts.get(inst.url)
        if host is not None and host.ejected(now):
            return "ejected"
        if host is not None and not host.healthy:
            return "unhealthy"
        return inst.health

    def counts(self) -> dict[str, dict[str, int]]:
        """service -> state -> number of instances (for the metrics gauge)."""
        now = self.clock()
        result: dict[str, dict[str, int]] = {}
        for s in self.services:
            per: dict[str, int] = {}
            for inst in self.registered(s) + self.static(s):
                state = self.state_of(inst, now)
                per[state] = per.get(state, 0) + 1
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
