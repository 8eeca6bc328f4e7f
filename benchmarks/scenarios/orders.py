"""Orders per second through the gateway: market buys with unique Idempotency-Keys.

One worker per user: the trading service locks a user's account row per order, so workers on
separate users measure the platform's throughput rather than one row lock. The bench gateway's
rate limits are raised (see run.py), so the limiter runs on every order without refusing any.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections import Counter

import aiohttp

from benchmarks.loadgen import Sample, deadline_after, percentile, run_workers, session
from benchmarks.settings import BenchSettings

ORDER = {"symbol": "BTC-USD", "side": "buy", "type": "market", "quantity": "0.0001"}
MAX_ORDERS = 100_000  # hard cap on top of the duration


async def _user(http: aiohttp.ClientSession, gateway: str, run_id: str, i: int) -> str:
    name = f"bench_{run_id}_{i}"
    password = secrets.token_urlsafe(16)
    body = {"username": name, "email": f"{name}@bench.example.com", "password": password}
    async with http.post(f"{gateway}/api/v1/users/register", json=body) as r:
        if r.status != 201:
            raise RuntimeError(f"register {name}: HTTP {r.status}: {(await r.text())[:300]}")
    login = {"username": name, "password": password}
    async with http.post(f"{gateway}/api/v1/users/login", json=login) as r:
        if r.status != 200:
            raise RuntimeError(f"login {name}: HTTP {r.status}: {(await r.text())[:300]}")
        return str((await r.json())["access_token"])


async def sign_in_users(gateway: str, label: str, count: int) -> list[str]:
    """Access tokens of `count` new users, registered and signed in through the gateway."""
    run_id = f"{label}_{secrets.token_hex(3)}"
    async with session(count + 2, timeout_s=10) as http:
        return list(await asyncio.gather(*(_user(http, gateway, run_id, i) for i in range(count))))


async def _run(cfg: BenchSettings, gateway: str) -> dict[str, object]:
    tokens = await sign_in_users(gateway, "sat", cfg.order_users)
    async with session(cfg.order_users + 4, timeout_s=10) as http:
        url = f"{gateway}/api/v1/trading/execute"
        statuses: Counter[int] = Counter()

        async def order(worker: int) -> Sample:
            headers = {
                "Authorization": f"Bearer {tokens[worker]}",
                "Idempotency-Key": str(uuid.uuid4()),
            }
            started = time.monotonic()
            try:
                async with http.post(url, json=ORDER, headers=headers) as r:
                    await r.read()
                    status = r.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            statuses[status] += 1
            return Sample(started, time.monotonic(), status)

        warm = deadline_after(cfg.warmup_s)
        await run_workers(cfg.order_users, order, until=warm, max_requests=MAX_ORDERS)
        statuses.clear()
        t0 = time.monotonic()
        samples = await run_workers(
            cfg.order_users, order, until=deadline_after(cfg.duration_s), max_requests=MAX_ORDERS
        )
        elapsed = time.monotonic() - t0

    ok = [s.latency_ms for s in samples if s.status == 201]
    per_second = [0] * max(1, int(elapsed))  # a last partial second counts in the last
    for s in samples:
        if s.status == 201:
            per_second[min(len(per_second) - 1, int(s.finished - t0))] += 1
    return {
        "users": cfg.order_users,
        "concurrency": cfg.order_users,
        "duration_s": round(elapsed, 2),
        "orders": len(samples),
        "filled": len(ok),
        "failed": len(samples) - len(ok),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "orders_per_s": round(len(ok) / elapsed, 1),
        "filled_each_second": per_second,
        "p50_ms": round(percentile(ok, 50), 2),
        "p95_ms": round(percentile(ok, 95), 2),
        "p99_ms": round(percentile(ok, 99), 2),
        "max_ms": round(max(ok, default=0.0), 2),
    }


def run(cfg: BenchSettings, gateway: str) -> dict[str, object]:
    result = asyncio.run(_run(cfg, gateway))
    print(
        f"  {result['orders_per_s']} orders/s  p50 {result['p50_ms']} ms  "
        f"p99 {result['p99_ms']} ms  statuses {result['statuses']}",
        flush=True,
    )
    return result
