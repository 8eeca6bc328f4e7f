"""Latency at a realistic load: fixed request rates (open loop), not saturation.

wrk (throughput.py) keeps 32 connections busy, so its latencies are those of a saturated
server: mostly queueing. Here requests are sent on a fixed schedule (BENCH_GET_RATE GETs/s,
BENCH_ORDER_RATE orders/s) whatever the answers do, and each latency runs from the request's
*scheduled* send time, so a stall delays no later request and its queueing still counts (no
coordinated omission). This is what the "API p95 < 100 ms" target is judged on.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from benchmarks.loadgen import OpenLoopRun, Sample, get_sample, open_loop, percentile, session
from benchmarks.scenarios.inference import price_windows
from benchmarks.scenarios.orders import ORDER, sign_in_users
from benchmarks.scenarios.throughput import PATH
from benchmarks.settings import BenchSettings

CONNECTIONS = 256  # enough that the client never queues at these rates


def pooled(runs: list[OpenLoopRun]) -> OpenLoopRun:
    """Several runs at the same rate as one: their samples together."""
    return OpenLoopRun(
        [s for run in runs for s in run.samples],
        sum(run.scheduled for run in runs),
        sum(run.elapsed_s for run in runs),
        max(run.max_lag_ms for run in runs),
    )


def summarize(run: OpenLoopRun, ok_status: int) -> dict[str, Any]:
    ok = [s.latency_ms for s in run.samples if s.status == ok_status]
    statuses = Counter(s.status for s in run.samples)
    return {
        "scheduled": run.scheduled,
        "sent": len(run.samples),
        "ok": len(ok),
        "failed": len(run.samples) - len(ok),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "achieved_per_s": round(len(ok) / run.elapsed_s, 1) if run.elapsed_s else 0.0,
        "p50_ms": round(percentile(ok, 50), 2),
        "p95_ms": round(percentile(ok, 95), 2),
        "p99_ms": round(percentile(ok, 99), 2),
        "max_ms": round(max(ok, default=0.0), 2),
        "generator_max_lag_ms": round(run.max_lag_ms, 2),
    }


async def _gets(
    cfg: BenchSettings, targets: dict[str, str], headers: Mapping[str, str]
) -> dict[str, Any]:
    """Rounds, each running every target in turn, pooled per target: a slow minute of this
    shared machine falls on both proxies, and each p99 rests on rounds x rate x duration
    samples."""
    async with session(CONNECTIONS) as http:

        def one_for(url: str) -> Callable[[int, float], Awaitable[Sample]]:
            async def one(_: int, due: float) -> Sample:
                return await get_sample(http, url, started=due, headers=headers)

            return one

        ones = {label: one_for(base + PATH) for label, base in targets.items()}
        for one in ones.values():
            await open_loop(cfg.get_rate, cfg.warmup_s, one)
        runs: dict[str, list[OpenLoopRun]] = {label: [] for label in targets}
        for _ in range(cfg.rounds):
            for label, one in ones.items():
                runs[label].append(await open_loop(cfg.get_rate, cfg.duration_s, one))
    return {
        label: {
            "rate_per_s": cfg.get_rate,
            "duration_s": cfg.duration_s,
            "rounds": cfg.rounds,
            **summarize(pooled(done), 200),
        }
        for label, done in runs.items()
    }


async def _post(
    http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str], due: float
) -> Sample:
    """One POST, timed from its scheduled send time `due`."""
    try:
        async with http.post(url, json=body, headers=headers) as r:
            await r.read()
            return Sample(due, time.monotonic(), r.status)
    except (aiohttp.ClientError, TimeoutError):
        return Sample(due, time.monotonic(), 0)


async def _inference(cfg: BenchSettings, gateway: str, tokens: list[str]) -> dict[str, Any]:
    url = f"{gateway}/api/v1/signals/predict"
    bodies = [{"symbol": "BTC-USD", "prices": w} for w in price_windows(256)]
    async with session(CONNECTIONS, timeout_s=10) as http:

        async def one(i: int, due: float) -> Sample:
            headers = {"Authorization": f"Bearer {tokens[i % len(tokens)]}"}
            return await _post(http, url, bodies[i % len(bodies)], headers, due)

        await open_loop(cfg.inference_rate, cfg.warmup_s, one)
        result = summarize(await open_loop(cfg.inference_rate, cfg.duration_s, one), 200)
    return {"rate_per_s": cfg.inference_rate, "duration_s": cfg.duration_s, **result}


async def _orders(cfg: BenchSettings, gateway: str) -> dict[str, Any]:
    url = f"{gateway}/api/v1/trading/execute"
    tokens = await sign_in_users(gateway, "fixed", cfg.order_users)
    async with session(CONNECTIONS, timeout_s=10) as http:

        async def one(i: int, due: float) -> Sample:
            headers = {
                "Authorization": f"Bearer {tokens[i % len(tokens)]}",
                "Idempotency-Key": str(uuid.uuid4()),
            }
            return await _post(http, url, ORDER, headers, due)

        await open_loop(cfg.order_rate, cfg.warmup_s, one)
        result = summarize(await open_loop(cfg.order_rate, cfg.duration_s, one), 201)
    return {
        "rate_per_s": cfg.order_rate,
        "duration_s": cfg.duration_s,
        "users": cfg.order_users,
        **result,
    }


def _print(label: str, r: dict[str, Any]) -> None:
    print(
        f"  {label:<15} {r['rate_per_s']:>6.0f}/s offered  {r['achieved_per_s']:>6.1f}/s ok  "
        f"p50 {r['p50_ms']:7.2f} ms  p95 {r['p95_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
        f"failed {r['failed']} of {r['sent']}  (generator lag max {r['generator_max_lag_ms']} ms)",
        flush=True,
    )


def run_gets(
    cfg: BenchSettings, targets: dict[str, str], headers: Mapping[str, str]
) -> dict[str, Any]:
    """targets: label -> base URL; each gets a warm-up at the same rate, then the rounds."""
    results = asyncio.run(_gets(cfg, targets, headers))
    for label, r in results.items():
        _print(label, r)
    return results


def run_inference(cfg: BenchSettings, gateway: str, tokens: list[str]) -> dict[str, Any]:
    """POST /api/v1/signals/predict at BENCH_INFERENCE_RATE through the gateway."""
    result = asyncio.run(_inference(cfg, gateway, tokens))
    _print("inference", result)
    return result


def run_orders(cfg: BenchSettings, gateway: str) -> dict[str, Any]:
    result = asyncio.run(_orders(cfg, gateway))
    _print("orders", result)
    return result
