"""Discovery lookup: the gateway's in-memory registry cache answering "which instance?".

The cache is filled the way RedisDiscovery fills it (registry records parsed by the gateway's
own parser), with three instances of each domain service, one of them ejected and one
failing active health checks, so each lookup walks the same filters it does in production.
"""

from __future__ import annotations

import gc
import time

import orjson

from benchmarks.loadgen import percentile
from gekko.config import DOMAIN_SERVICES
from gekko.gateway.discovery import ServiceRegistryCache, parse_record
from gekko.registry import registration_record

INSTANCES_PER_SERVICE = 3


def populated_cache() -> ServiceRegistryCache:
    now = time.time()
    records = []
    for service in DOMAIN_SERVICES:
        for i in range(INSTANCES_PER_SERVICE):
            url = f"http://10.0.{DOMAIN_SERVICES.index(service)}.{i + 1}:8080"
            raw = orjson.dumps(registration_record(service, f"{service}-{i}", url, "ok", now, now))
            inst = parse_record(raw)
            assert inst is not None, "registry record format changed"  # noqa: S101
            records.append(inst)
    cache = ServiceRegistryCache(DOMAIN_SERVICES, {})
    cache.replace(records)
    # One instance out of rotation per service the two ways the gateway does it.
    cache.eject("http://10.0.3.1:8080", 3600)  # market_data: passive outlier ejection
    cache.host("http://10.0.1.2:8080").healthy = False  # trading: active health checks
    return cache


def run(lookups: int) -> dict[str, object]:
    cache = populated_cache()
    services = list(DOMAIN_SERVICES)
    n_services = len(services)
    pick = cache.pick
    for i in range(10_000):  # warm-up
        pick(services[i % n_services])

    timings: list[int] = []
    gc.disable()  # measure lookups, not the collector's pauses from our own timing list
    try:
        clock = time.perf_counter_ns
        for i in range(lookups):
            service = services[i % n_services]
            t0 = clock()
            inst = pick(service)
            timings.append(clock() - t0)
            if inst is None:
                raise RuntimeError(f"lookup for {service} found no instance")
        # The same loop untimed: the mean without perf_counter_ns's own cost per call.
        t0 = clock()
        for i in range(lookups):
            pick(services[i % n_services])
        batch_ns = (clock() - t0) / lookups
    finally:
        gc.enable()

    timings_us = [t / 1000 for t in timings]
    return {
        "lookups": lookups,
        "instances": n_services * INSTANCES_PER_SERVICE,
        "call": "ServiceRegistryCache.pick(service)",
        "mean_us": round(sum(timings_us) / len(timings_us), 3),
        "p50_us": round(percentile(timings_us, 50), 3),
        "p99_us": round(percentile(timings_us, 99), 3),
        "max_us": round(max(timings_us), 3),
        "batch_mean_us": round(batch_ns / 1000, 3),
    }
