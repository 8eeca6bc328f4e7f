"""One Redis Lua script called by many concurrent tasks, the calls sent together.

A busy gateway has dozens of requests in flight, and each takes its rate-limit quotas with one
script call. redis-py's per-call work (taking a pooled connection, its retry wrapper, one write
and one read each) cost more of the gateway's CPU than Redis spent running the script. Here the
calls made in one event-loop turn leave together at the end of it, as one trip: one pipeline
(one connection, one write, the answers read back in order). Each call is still its own script
run, atomic on its own keys; nothing is shared between the calls but the trip. A lone call waits
for no one: it leaves at the end of the turn it was made in.

At most `max_trips` trips are out at once (two by default), each on its own connection; the
calls made while that many are out go together in the next, when one comes back. The busier
the gateway, the more calls share a trip. With one trip at a time, a call made just after a
trip left waited for that whole trip before its own went out; a second trip sends it at once.
On the 2-core bench the second trip raised the gateway's saturated throughput by about 5 % of
nginx's; a third sent smaller batches and lost it again (docs/benchmarks.md).

A trip that takes longer than `timeout_s` fails its calls with TimeoutError (the connection it
used is dropped, not reused mid-answer). The timer is per trip: a call queued behind a trip that
times out fails with it, so no call waits much more than twice `timeout_s`.

If Redis lost the script (a restart, SCRIPT FLUSH), the calls it refused ran nothing: the script
is loaded again and those calls sent once more. A failed trip fails every call in it with the
same error, and the calls queued behind it too, rather than each waiting out another timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

Call = tuple[Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class ScriptBatcher:
    def __init__(
        self, client: Redis, source: str, *, timeout_s: float | None = None, max_trips: int = 2
    ) -> None:
        if max_trips < 1:
            raise ValueError(f"max_trips must be at least 1, got {max_trips}")
        # One timer per trip: give a client without socket timeouts, whose every read and
        # write would otherwise carry a timer (and every write a task) of its own.
        self._timeout_s = timeout_s
        self._client = client
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis's script id
        self._max_trips = max_trips
        self._queued: list[Call] = []
        self._senders: set[asyncio.Task[None]] = set()
        # A sender is started and has not taken its batch yet: the calls of this turn go with it.
        self._starting = False

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((keys, args, answer))
        if not self._starting and len(self._senders) < self._max_trips:
            # Starts at the next turn: the calls made in this one go with this call.
            self._starting = True
            sender = asyncio.ensure_future(self._send_all())
            self._senders.add(sender)
        return await answer

    async def _send_all(self) -> None:
        """A trip, then one more for what queued meanwhile, until nothing is left to send."""
        self._starting = False
        batch: list[Call] = []
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                error = await self._send(batch)
                if error is not None:  # Redis is failing: the calls queued behind fail too
                    batch, self._queued = self._queued, []
                    _fail(batch, error)
        except BaseException as exc:  # cancelled (closing), or a bug: no caller left waiting
            stranded, self._queued = batch + self._queued, []
            if isinstance(exc, Exception):
                _fail(stranded, exc)
            else:
                for _, _, answer in stranded:
                    answer.cancel()  # a no-op on an answer already given
            raise
        finally:
            # At once, not in a done callback: a call made later in this turn must see the
            # room and start a sender, or it would wait for a trip that never comes.
            self._senders.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _send(self, batch: list[Call]) -> Exception | None:
        try:
            async with asyncio.timeout(self._timeout_s):
                results = await self._run(batch)
        except TimeoutError:
            error = TimeoutError(f"Redis did not answer within {self._timeout_s:g} s")
            _fail(batch, error)
            return error
        except Exception as exc:  # handed to every caller of the batch
            _fail(batch, exc)
            return exc
        for (_, _, answer), result in zip(batch, results, strict=True):
            if answer.done():  # its caller gave up (cancelled): nobody to tell
                continue
            if isinstance(result, Exception):
                answer.set_exception(result)
            else:
                answer.set_result(result)
        return None

    async def close(self) -> None:
        """Stop sending; calls still waiting are cancelled."""
        senders = list(self._senders)
        for sender in senders:
            sender.cancel()
        if senders:
            await asyncio.wait(senders)  # (raises if close() itself is cancelled)
        # A sender cancelled before it ran never reached its own cleanup (its body and `finally`
        # never ran): it is still listed, and the calls it was started for are still queued.
        self._senders.clear()
        self._starting = False
        stranded, self._queued = self._queued, []
        for _, _, answer in stranded:
            answer.cancel()

    async def _run(self, batch: list[Call]) -> list[Any]:
        results = await self._trip(batch)
        lost = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if lost:
            await self._client.script_load(self._source)
            for i, result in zip(lost, await self._trip([batch[i] for i in lost]), strict=True):
                results[i] = result
        return results

    async def _trip(self, batch: list[Call]) -> list[Any]:
        """Every call of the batch in one write (packed by hiredis, in C), the answers read
        back in order on one pooled connection: a pipeline without redis-py's per-command
        layers. A call Redis refuses (NOSCRIPT) gets its error; the others their answers."""
        packed = b"".join(
            hiredis.pack_command(("EVALSHA", self._sha, len(keys), *keys, *args))
            for keys, args, _ in batch
        )
        pool = self._client.connection_pool
        conn = await pool.get_connection()
        try:
            # A connection that fails or is cancelled mid-trip is disconnected by redis-py
            # before it goes back to the pool: no late answer is read as another call's.
            await conn.send_packed_command(packed, check_health=False)
            results: list[Any] = []
            for _ in batch:
                try:
                    results.append(await conn.read_response())
                except ResponseError as exc:  # this call's own error: read the next answer
                    results.append(exc)
            return results
        finally:
            await pool.release(conn)


def _fail(batch: list[Call], error: Exception) -> None:
    for _, _, answer in batch:
        if not answer.done():
            answer.set_exception(error)
