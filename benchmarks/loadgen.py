"""asyncio load loops with a hard stop: every loop ends at a deadline or a request count."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
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


async def get_sample(
    http: aiohttp.ClientSession,
    url: str,
    started: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> Sample:
    """One GET; latency from `started` (the scheduled send time in open-loop runs) or now."""
    started = time.monotonic() if started is None else started
    try:
        async with http.get(url, headers=headers) as response:
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


@dataclass(frozen=True)
class OpenLoopRun:
    samples: list[Sample]
    scheduled: int
    elapsed_s: float
    max_lag_ms: float  # how late the generator itself started a request (its own overload)


async def open_loop(
    rate: float,
    duration_s: float,
    one: Callable[[int, float], Awaitable[Sample]],
    *,
    max_in_flight: int = 2000,
) -> OpenLoopRun:
    """Fixed-rate (open-loop) load: request i is due at t0 + i/rate, whatever the answers do.

    `one(i, due)` must time its Sample from `due`, not from when it got to send: a slow
    answer then delays no later request, and the queueing a slow server causes counts in
    the latencies (no coordinated omission, unlike wrk's closed loop). More than
    `max_in_flight` outstanding requests end the run early rather than pile up forever.
    """
    tasks: list[asyncio.Task[Sample]] = []
    in_flight = 0

    def finished(_: asyncio.Task[Sample]) -> None:
        nonlocal in_flight
        in_flight -= 1

    total = int(rate * duration_s)
    t0 = time.monotonic() + 0.01
    max_lag = 0.0
    for i in range(total):
        due = t0 + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        max_lag = max(max_lag, time.monotonic() - due)
        if in_flight >= max_in_flight:
            break
        task = asyncio.ensure_future(one(i, due))
        in_flight += 1
        task.add_done_callback(finished)
        tasks.append(task)
    samples = list(await asyncio.gather(*tasks))
    return OpenLoopRun(samples, total, time.monotonic() - t0, max_lag * 1000)
