"""Signal inference latency: in process (one request, and micro-batched under concurrency) and,
when a gateway is given, end to end through it.

    python -m benchmarks.scenarios.inference [--device cpu|cuda|auto] [--gateway URL]

(a) single: one request's features + one forward + softmax, back to Python floats, timed per
    call, sequentially. (b) batched: `concurrency` asyncio clients submit through the service's
    MicroBatcher (the same settings as the service: max batch 32, max wait 2 ms); per-request
    latency is submit -> result, so it includes the batching wait. (c) gateway: signed-in clients
    POST /api/v1/signals/predict through a gateway; skipped when none answers.
`make bench` runs (a) and (b) in process and (c) against its private stack.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.loadgen import percentile, session
from benchmarks.settings import OUT_DIR
from gekko.signals.batching import MicroBatcher
from gekko.signals.device import choose_device, limit_threads
from gekko.signals.features import WINDOW, request_features
from gekko.signals.predictor import Predictor
from gekko.signals.settings import default_threads
from gekko.signals.train import TrainConfig, write

MODEL_PATH = OUT_DIR / "signal-model.pt"


def train_model(path: Path = MODEL_PATH) -> Path:
    """The shipped training recipe (the image build runs the same), from the current code."""
    write(path, TrainConfig())
    return path


def price_windows(n: int, seed: int = 7) -> list[list[float]]:
    import torch  # after gekko.signals: its import silences the CPU wheel's NumPy warning

    steps = (
        torch.randn(n, WINDOW, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        * 0.01
    )
    return (100 * torch.exp(torch.cumsum(steps, dim=1))).tolist()


def _stats_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in latencies_s]
    return {
        "p50_ms": round(percentile(ms, 50), 4),
        "p99_ms": round(percentile(ms, 99), 4),
        "max_ms": round(max(ms), 4),
    }


def single(predictor: Predictor, requests: int) -> dict[str, Any]:
    windows = price_windows(requests)
    for prices in windows[:200]:  # warm-up
        predictor.forward(request_features(prices).unsqueeze(0))
    latencies: list[float] = []
    gc.disable()
    try:
        for prices in windows:
            t0 = time.perf_counter()
            predictor.forward(request_features(prices).unsqueeze(0))
            latencies.append(time.perf_counter() - t0)
    finally:
        gc.enable()
    return {"requests": requests, **_stats_ms(latencies)}


async def _batched(
    predictor: Predictor, requests: int, concurrency: int, max_batch: int, max_wait_ms: float
) -> dict[str, Any]:
    sizes: list[int] = []
    batcher = MicroBatcher(predictor.forward, max_batch, max_wait_ms / 1000, sizes.append)
    batcher.start()
    features = [request_features(p) for p in price_windows(requests)]
    latencies: list[float] = []
    cursor = iter(range(requests))

    async def client() -> None:
        for i in cursor:
            t0 = time.perf_counter()
            await batcher.submit(features[i])
            latencies.append(time.perf_counter() - t0)

    try:
        await asyncio.gather(*(batcher.submit(f) for f in features[:64]))  # warm-up
        sizes.clear()
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    finally:
        await batcher.stop()
    return {
        "requests": requests,
        "concurrency": concurrency,
        "max_batch": max_batch,
        "max_wait_ms": max_wait_ms,
        "per_s": round(requests / elapsed, 1),
        "forwards": len(sizes),
        "mean_batch": round(sum(sizes) / len(sizes), 2),
        **_stats_ms(latencies),
    }


def batched(
    predictor: Predictor,
    requests: int,
    concurrency: int,
    max_batch: int = 32,
    max_wait_ms: float = 2.0,
) -> dict[str, Any]:
    return asyncio.run(_batched(predictor, requests, concurrency, max_batch, max_wait_ms))


def run(
    device: str = "cpu",
    requests: int = 5000,
    concurrency: int = 32,
    model_path: Path | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """(a) and (b): in process, no server involved."""
    limit_threads(threads or default_threads())
    choice = choose_device(device)
    predictor = Predictor.load(model_path or train_model(), choice)
    predictor.warm_up(5, 32)
    return {
        "device": choice.device,
        "requested_device": choice.requested,
        "fallback_reason": choice.fallback_reason,
        "torch_threads": threads or default_threads(),
        "model_version": predictor.version,
        "single": single(predictor, requests),
        "batched": batched(predictor, requests, concurrency),
    }


async def _user_token(http: aiohttp.ClientSession, gateway: str) -> str:
    name = f"bench_inf_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(16)
    body = {"username": name, "email": f"{name}@bench.example.com", "password": password}
    async with http.post(f"{gateway}/api/v1/users/register", json=body) as r:
        if r.status != 201:
            raise RuntimeError(f"register: HTTP {r.status}: {(await r.text())[:300]}")
    async with http.post(
        f"{gateway}/api/v1/users/login", json={"username": name, "password": password}
    ) as r:
        if r.status != 200:
            raise RuntimeError(f"login: HTTP {r.status}: {(await r.text())[:300]}")
        return str((await r.json())["access_token"])


async def _gateway(gateway: str, requests: int, concurrency: int) -> dict[str, Any] | None:
    async with session(concurrency + 2, timeout_s=10) as http:
        try:
            async with http.get(f"{gateway}/health") as r:
                await r.read()
        except (aiohttp.ClientError, TimeoutError):
            return None
        # One user per client: the gateway's per-user rate limit stays out of the numbers.
        tokens = await asyncio.gather(*(_user_token(http, gateway) for _ in range(concurrency)))
        windows = price_windows(requests)
        url = f"{gateway}/api/v1/signals/predict"
        latencies: list[float] = []
        failed = 0
        cursor = iter(range(requests))

        async def client(token: str) -> None:
            nonlocal failed
            headers = {"Authorization": f"Bearer {token}"}
            for i in cursor:
                t0 = time.perf_counter()
                async with http.post(
                    url, json={"symbol": "BTC-USD", "prices": windows[i]}, headers=headers
                ) as r:
                    await r.read()
                    if r.status != 200:
                        failed += 1
                        continue
                latencies.append(time.perf_counter() - t0)

        async def warm_up(token: str) -> None:  # connections and code paths before the clock
            headers = {"Authorization": f"Bearer {token}"}
            body = {"symbol": "BTC-USD", "prices": windows[0]}
            for _ in range(5):
                async with http.post(url, json=body, headers=headers) as r:
                    await r.read()

        await asyncio.gather(*(warm_up(t) for t in tokens))
        started = time.perf_counter()
        await asyncio.gather(*(client(t) for t in tokens))
        elapsed = time.perf_counter() - started
    if not latencies:
        return {"requests": requests, "failed": failed, "concurrency": concurrency}
    return {
        "requests": requests,
        "concurrency": concurrency,
        "failed": failed,
        "per_s": round(len(latencies) / elapsed, 1),
        **_stats_ms(latencies),
    }


def through_gateway(gateway: str, requests: int = 1000, concurrency: int = 8) -> dict | None:
    """(c): None when no gateway answers at `gateway`."""
    return asyncio.run(_gateway(gateway.rstrip("/"), requests, concurrency))


def describe(results: dict[str, Any]) -> list[str]:
    s, b = results["single"], results["batched"]
    lines = [
        f"  device {results['device']} (requested {results['requested_device']}"
        + (f"; fell back: {results['fallback_reason']}" if results["fallback_reason"] else "")
        + f"), {results['torch_threads']} torch thread(s), model {results['model_version']}",
        f"  (a) single request, in process: p50 {s['p50_ms']:.3f} ms  p99 {s['p99_ms']:.3f} ms"
        f"  ({s['requests']} requests)",
        f"  (b) batched, {b['concurrency']} concurrent clients: p50 {b['p50_ms']:.3f} ms"
        f"  p99 {b['p99_ms']:.3f} ms per request, {b['per_s']:.0f} req/s,"
        f" mean batch {b['mean_batch']}",
    ]
    g = results.get("gateway")
    if g and "p99_ms" in g:
        lines.append(
            f"  (c) through the gateway, {g['concurrency']} clients: p50 {g['p50_ms']:.2f} ms"
            f"  p99 {g['p99_ms']:.2f} ms, {g['per_s']:.0f} req/s, {g['failed']} failed"
        )
    elif "gateway" in results:
        lines.append("  (c) through the gateway: skipped (no gateway answered)")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scenarios.inference")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--threads", type=int, help="torch threads (default: 1-2 by cores)")
    parser.add_argument("--model", type=Path, help=f"model file (default: train {MODEL_PATH})")
    parser.add_argument("--gateway", help="also measure through this gateway, e.g. a bench stack")
    args = parser.parse_args(argv)
    results = run(args.device, args.requests, args.concurrency, args.model, args.threads)
    if args.gateway:
        results["gateway"] = through_gateway(args.gateway)
    print("\n".join(describe(results)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
