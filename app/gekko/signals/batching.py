"""An asyncio micro-batcher: concurrent requests share one forward pass.

Requests queue their feature rows; one loop takes everything queued (up to max_batch rows), runs
a single forward for them on a dedicated worker thread (the event loop keeps accepting requests
meanwhile), and resolves each request's future with its own row of the result. While a forward
runs, new requests queue up and form the next batch, so under load batches grow by themselves.

Waiting for company is adaptive: a batch smaller than the previous one waits up to max_wait for
more requests, since the load just seen suggests they are coming; a batch as large as the last
one goes at once. So a lone request on an idle service never waits, and a steady stream of
concurrent requests is not held back max_wait every time just because it never fills max_batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

log = logging.getLogger("gekko.signals.batching")

# [B, F] features -> B rows of class probabilities.
Forward = Callable[[torch.Tensor], list[list[float]]]
_Item = tuple[torch.Tensor, asyncio.Future[list[float]]]


class MicroBatcher:
    def __init__(
        self,
        forward: Forward,
        max_batch: int = 32,
        max_wait_s: float = 0.002,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.forward = forward
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self.forwards = 0  # forward passes run: fewer than requests when batching works
        self._expected = 1  # the previous batch's size: worth waiting for until reached
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        # One thread: forwards never overlap (the model is not shared between threads) and the
        # event loop is never blocked by torch.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="signals:batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("inference stopped"))
        self._executor.shutdown(wait=True)

    async def submit(self, features: torch.Tensor) -> list[float]:
        """One feature row [F] -> its class probabilities, batched with concurrent calls."""
        future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((features, future))
        return await future

    async def _collect(self) -> list[_Item]:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if len(batch) >= self._expected or remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        batch.append(await self._queue.get())
                except TimeoutError:
                    break
            else:
                batch.append(self._queue.get_nowait())
        self._expected = len(batch)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            # Requests whose caller went away (client disconnect) are not computed.
            batch = [item for item in batch if not item[1].done()]
            if not batch:
                continue
            try:
                rows = torch.stack([features for features, _ in batch])
                probabilities = await loop.run_in_executor(self._executor, self.forward, rows)
            except Exception as exc:
                log.exception("inference forward failed for a batch of %d", len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.forwards += 1
            if self.on_batch is not None:
                self.on_batch(len(batch))
            for (_, future), row in zip(batch, probabilities, strict=True):
                if not future.done():
                    future.set_result(row)
