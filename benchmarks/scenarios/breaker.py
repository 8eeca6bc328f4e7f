"""Breaker detection: the only live market_data instance dies under steady GETs; how long until
the gateway answers from an open circuit (503, Retry-After, problem type circuit-open)?"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from benchmarks import ops
from benchmarks.loadgen import Sample, deadline_after, get_sample, run_workers, session
from benchmarks.settings import BenchSettings
from benchmarks.stack import Proc

PATH = "/api/v1/market-data/quotes/BTC-USD"
BEFORE_S = 1.0
LIMIT_S = 5.0  # give up after this long (the target is 1 s)
MAX_REQUESTS = 100_000


def is_open_circuit(sample: Sample) -> bool:
    return (
        sample.status == 503
        and sample.retry_after is not None
        and (sample.problem_type or "").endswith("/circuit-open")
    )


async def _run(cfg: BenchSettings, gateway: str, victim: Proc) -> dict[str, object]:
    url = gateway + PATH
    kill_at: list[float] = []
    opened: list[Sample] = []
    give_up = deadline_after(BEFORE_S + LIMIT_S)

    def done() -> bool:
        return bool(opened) or give_up()

    async with session(cfg.probe_workers) as http:

        async def probe(_: int) -> Sample:
            sample = await get_sample(http, url)
            if kill_at and is_open_circuit(sample) and sample.started >= kill_at[0]:
                opened.append(sample)
            return sample

        async def killer() -> None:
            await asyncio.sleep(BEFORE_S)
            kill_at.append(time.monotonic())
            await asyncio.to_thread(victim.kill)

        samples, _ = await asyncio.gather(
            run_workers(cfg.probe_workers, probe, until=done, max_requests=MAX_REQUESTS), killer()
        )
        async with http.get(f"{gateway}/services", headers=ops.headers()) as r:
            state = (await r.json())["circuit_breakers"]["market_data"]

    t_kill = kill_at[0]
    after = [s for s in samples if s.finished >= t_kill]
    first = min(opened, key=lambda s: s.finished) if opened else None
    return {
        "workers": cfg.probe_workers,
        "detection_ms": round((first.finished - t_kill) * 1000, 1) if first else None,
        "retry_after_s": first.retry_after if first else None,
        "responses_until_open": {
            str(k): v
            for k, v in Counter(
                s.status for s in after if first is None or s.finished <= first.finished
            ).items()
        },
        "breaker_state": state.get("state"),
    }


def run(cfg: BenchSettings, gateway: str, victim: Proc) -> dict[str, object]:
    result = asyncio.run(_run(cfg, gateway, victim))
    print(
        f"  circuit open after {result['detection_ms']} ms (Retry-After: "
        f"{result['retry_after_s']}), responses until then {result['responses_until_open']}",
        flush=True,
    )
    return result
