"""The gateway's rate limiter alone, in process, against the bench's Redis: what one request's
check costs the gateway (its CPU, since the gateway is a single process) and how long it takes,
with as many checks in flight as a busy gateway has. Each check takes a unit of a user's quota
and of a service's, as every proxied request does (gekko.ratelimit)."""

from __future__ import annotations

import asyncio
import statistics
import time

from gekko.ratelimit import Quota, RateLimiter

CHECKS = 20_000
IN_FLIGHT = 32
USERS = 500  # quotas far from full: every check is admitted, as in the throughput stage


async def _run(redis_url: str, checks: int, in_flight: int) -> dict[str, float]:
    limiter = RateLimiter(redis_url, Quota(1_000_000, 60), Quota(10_000_000, 60))
    latencies: list[float] = []
    admitted = 0
    try:
        await limiter.check("bench:warm", "bench")
        queue = iter(range(checks))

        async def worker() -> None:
            nonlocal admitted
            for n in queue:
                started = time.perf_counter()
                decision = await limiter.check(f"bench:user:{n % USERS}", "bench")
                latencies.append(time.perf_counter() - started)
                admitted += bool(decision and decision.allowed)

        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await limiter.close()
    latencies.sort()
    return {
        "checks": checks,
        "admitted": admitted,
        "in_flight": in_flight,
        "checks_per_s": round(checks / wall),
        "cpu_us_per_check": round(cpu / checks * 1e6, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
    }


def run(redis_url: str, checks: int = CHECKS, in_flight: int = IN_FLIGHT) -> dict[str, float]:
    return asyncio.run(_run(redis_url, checks, in_flight))


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/0")))
