"""asyncio load loops with a hard stop: every loop ends at a deadline or a request count."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp
import orjson


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of `values` (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Sample:
    started: float  # time.monotonic() when sent
    finished: float
    status: int  # 0 for a client-side error (connection refused, timeout)
    retry_after: str | None = None
    problem_type: str | None = None

    @property
    def latency_ms(self) -> float:
        return (self.finished - self.started) * 1000


def session(connections: int, timeout_s: float = 5.0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, limit_per_host=connections),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    )


async def get_sample(http: aiohttp.ClientSession, url: str) -> Sample:
    started = time.monotonic()
    try:
        async with http.get(url) as response:
            body = await response.read()
            problem = None
            if response.content_type == "application/problem+json":
                with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                    problem = str(orjson.loads(body).get("type"))
            retry_after = response.headers.get("Retry-After")
            return Sample(started, time.monotonic(), response.status, retry_after, problem)
    except (aiohttp.ClientError, TimeoutError):
        return Sample(started, time.monotonic(), 0)


async def run_workers(
    workers: int,
    one: Callable[[int], Awaitable[Sample]],
    *,
    until: Callable[[], bool],
    max_requests: int,
) -> list[Sample]:
    """`workers` loops calling `one(worker_index)` until `until()` or `max_requests` in total."""
    samples: list[Sample] = []

    async def loop(index: int) -> None:
        while not until() and len(samples) < max_requests:
            samples.append(await one(index))

    await asyncio.gather(*(loop(i) for i in range(workers)))
    return samples


def deadline_after(seconds: float) -> Callable[[], bool]:
    end = time.monotonic() + seconds
    return lambda: time.monotonic() >= end
