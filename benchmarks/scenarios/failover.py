"""Failover: two market_data instances behind the gateway, steady GETs, SIGKILL one.

Measures, from the kill: requests that failed (the gateway retries idempotent requests on the
other instance, so ideally none), when the last one failed, and when /services first showed
the dead instance out of rotation (ejected or unhealthy).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import aiohttp

from benchmarks import ops
from benchmarks.loadgen import deadline_after, get_sample, percentile, run_workers, session
from benchmarks.settings import BenchSettings
from benchmarks.stack import Proc, Stack

PATH = "/api/v1/market-data/quotes/BTC-USD"
BEFORE_S = 2.0  # steady traffic before the kill
AFTER_S = 6.0  # and after it (the target is 5 s)
MAX_REQUESTS = 200_000


async def service_instances(
    http: aiohttp.ClientSession, gateway: str, service: str
) -> list[dict[str, Any]]:
    async with http.get(f"{gateway}/services", headers=ops.headers()) as r:
        body = await r.json()
    return list(body["services"].get(service, []))


async def wait_routable(gateway: str, service: str, urls: set[str], timeout_s: float) -> None:
    """Until the gateway routes to every one of `urls` (discovery picked them up)."""
    end = time.monotonic() + timeout_s
    async with session(2) as http:
        while time.monotonic() < end:
            try:
                routable = {
                    i["url"]
                    for i in await service_instances(http, gateway, service)
                    if i["routable"]
                }
                if urls <= routable:
                    return
            except (aiohttp.ClientError, TimeoutError, KeyError, ValueError):
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"gateway did not route to {sorted(urls)} within {timeout_s:.0f} s")


async def _run(cfg: BenchSettings, gateway: str, victim: Proc) -> dict[str, object]:
    url = gateway + PATH
    kill_at: list[float] = []
    routed_off: dict[str, Any] = {}
    stop = deadline_after(BEFORE_S + AFTER_S)

    async with session(cfg.probe_workers) as http, session(2) as poll_http:

        async def killer() -> None:
            await asyncio.sleep(BEFORE_S)
            kill_at.append(time.monotonic())
            await asyncio.to_thread(victim.kill)

        async def poller() -> None:
            while not stop():
                if kill_at:
                    try:
                        for inst in await service_instances(poll_http, gateway, "market_data"):
                            if inst["url"] == victim.url and not inst["routable"]:
                                routed_off["at"] = time.monotonic()
                                routed_off["ejected"] = inst.get("ejected")
                                routed_off["active_health"] = inst.get("active_health")
                                return
                    except (aiohttp.ClientError, TimeoutError, KeyError, ValueError):
                        pass
                await asyncio.sleep(0.05)

        load = run_workers(
            cfg.probe_workers,
            lambda _: get_sample(http, url),
            until=stop,
            max_requests=MAX_REQUESTS,
        )
        samples, *_ = await asyncio.gather(load, killer(), poller())

    t_kill = kill_at[0]
    after = [s for s in samples if s.finished >= t_kill]
    failed = [s for s in after if s.status != 200]
    before = [s for s in samples if s.finished < t_kill]
    return {
        "instances": 2,
        "workers": cfg.probe_workers,
        "requests_before_kill": len(before),
        "failed_before_kill": sum(1 for s in before if s.status != 200),
        "requests_after_kill": len(after),
        "failed_after_kill": len(failed),
        "failed_statuses": {str(k): v for k, v in Counter(s.status for s in failed).items()},
        "last_failure_ms": round((max(s.finished for s in failed) - t_kill) * 1000, 1)
        if failed
        else 0.0,
        "routed_off_ms": round((routed_off["at"] - t_kill) * 1000, 1) if routed_off else None,
        "routed_off_by": (
            ("ejection" if routed_off.get("ejected") else "active health check")
            if routed_off
            else None
        ),
        "p99_after_kill_ms": round(percentile([s.latency_ms for s in after], 99), 2),
        "max_after_kill_ms": round(max((s.latency_ms for s in after), default=0.0), 2),
    }


def run(cfg: BenchSettings, stack: Stack, gateway: str, survivor: Proc) -> dict[str, object]:
    second = stack.start_component("market_data", name="market_data-b")
    stack.wait_http(second, "/health", {200})
    asyncio.run(wait_routable(gateway, "market_data", {survivor.url, second.url}, 20))
    result = asyncio.run(_run(cfg, gateway, second))
    print(
        f"  failed {result['failed_after_kill']}/{result['requests_after_kill']} after the kill, "
        f"last failure at {result['last_failure_ms']} ms, routed off at "
        f"{result['routed_off_ms']} ms by {result['routed_off_by']}",
        flush=True,
    )
    return result
