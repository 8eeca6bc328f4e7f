"""Dependency checks shared by every component's GET /health."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
from redis.asyncio import Redis

CHECK_TIMEOUT_S = 1.0


async def _timed(coro: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await coro
    except Exception as exc:  # any failure of a dependency is a health result, not an error
        return {
            "status": "down",
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            "error": type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"[:200],
        }
    return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


async def check_postgres(pool: asyncpg.Pool | None) -> dict[str, Any]:
    if pool is None:
        return {"status": "down", "latency_ms": 0.0, "error": "no pool"}
    return await _timed(pool.fetchval("SELECT 1"))


async def check_redis(redis: Redis | None) -> dict[str, Any]:
    if redis is None:
        return {"status": "down", "latency_ms": 0.0, "error": "no client"}
    return await _timed(redis.ping())


def overall_status(checks: dict[str, dict[str, Any]]) -> str:
    """ok when every check is ok, down when all failed, degraded otherwise."""
    statuses = [c.get("status") for c in checks.values()]
    if all(s == "ok" for s in statuses):
        return "ok"
    if all(s == "down" for s in statuses):
        return "down"
    return "degraded"


async def dependency_checks(pool: asyncpg.Pool | None, redis: Redis | None) -> dict[str, Any]:
    postgres, redis_check = await asyncio.gather(check_postgres(pool), check_redis(redis))
    return {"postgres": postgres, "redis": redis_check}
