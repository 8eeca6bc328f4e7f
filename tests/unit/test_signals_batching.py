"""The micro-batcher: concurrent requests share forward passes and get their own rows back."""

from __future__ import annotations

import asyncio

import pytest
import torch

from gekko.signals.batching import MicroBatcher
from gekko.signals.device import DeviceChoice
from gekko.signals.features import FEATURES
from gekko.signals.predictor import Predictor


@pytest.fixture(scope="module")
def predictor(signal_model) -> Predictor:
    return Predictor.load(signal_model, DeviceChoice("cpu", "cpu"))


def rows(n: int) -> torch.Tensor:
    return torch.randn(n, FEATURES, generator=torch.Generator().manual_seed(n))


async def run_concurrently(batcher: MicroBatcher, inputs: torch.Tensor) -> list[list[float]]:
    batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(row) for row in inputs))
    finally:
        await batcher.stop()


def test_concurrent_requests_coalesce_and_equal_unbatched_results(predictor):
    inputs = rows(40)
    sizes: list[int] = []
    batcher = MicroBatcher(predictor.forward, max_batch=16, max_wait_s=0.05, on_batch=sizes.append)
    batched = asyncio.run(run_concurrently(batcher, inputs))

    assert batcher.forwards < len(inputs)  # 40 requests, far fewer forward passes
    assert sum(sizes) == len(inputs) and max(sizes) == 16
    alone = [predictor.forward(row.unsqueeze(0))[0] for row in inputs]
    for got, want in zip(batched, alone, strict=True):
        assert got == pytest.approx(want, abs=1e-6)  # each caller gets its own row
    assert [max(range(3), key=g.__getitem__) for g in batched] == [
        max(range(3), key=w.__getitem__) for w in alone
    ]


def test_batches_never_exceed_max_batch(predictor):
    sizes: list[int] = []
    batcher = MicroBatcher(predictor.forward, max_batch=4, max_wait_s=0.05, on_batch=sizes.append)
    asyncio.run(run_concurrently(batcher, rows(10)))
    assert max(sizes) <= 4 and sum(sizes) == 10


def test_a_lone_request_on_an_idle_service_does_not_wait_for_company(predictor):
    # max_wait is an hour: only the adaptive rule (no recent load, no wait) lets this finish.
    batcher = MicroBatcher(predictor.forward, max_batch=32, max_wait_s=3600)

    async def scenario() -> list[float]:
        batcher.start()
        try:
            return await asyncio.wait_for(batcher.submit(rows(1)[0]), timeout=30)
        finally:
            await batcher.stop()

    result = asyncio.run(scenario())
    assert sum(result) == pytest.approx(1.0) and batcher.forwards == 1


def test_after_a_burst_a_smaller_batch_waits_for_the_rest(predictor):
    sizes: list[int] = []
    batcher = MicroBatcher(predictor.forward, max_batch=32, max_wait_s=3600, on_batch=sizes.append)

    async def scenario() -> None:
        batcher.start()
        try:
            await asyncio.gather(*(batcher.submit(row) for row in rows(6)))  # a burst of 6
            first = asyncio.ensure_future(batcher.submit(rows(1)[0]))
            await asyncio.sleep(0.05)
            assert not first.done()  # 1 < 6 just seen: more are probably coming, so it waits
            await asyncio.gather(first, *(batcher.submit(row) for row in rows(5)))
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    assert sizes == [6, 6]


def test_a_failing_forward_fails_every_request_of_its_batch():
    def broken(_: torch.Tensor) -> list[list[float]]:
        raise RuntimeError("device lost")

    async def scenario() -> list[object]:
        batcher = MicroBatcher(broken, max_batch=8, max_wait_s=0.05)
        batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.submit(row) for row in rows(3)), return_exceptions=True
            )
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert all(isinstance(r, RuntimeError) and "device lost" in str(r) for r in results)
