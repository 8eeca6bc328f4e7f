"""Script calls from concurrent tasks share one trip to Redis (gekko.script_batch), and each
caller still gets its own script's answer or error."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from gekko.script_batch import ScriptBatcher

pytestmark = pytest.mark.integration

# Counts a key up, or fails for a key that holds a list (a script error of that call only).
COUNT_UP = "return redis.call('incr', KEYS[1]) * tonumber(ARGV[1])"


def test_calls_of_one_turn_go_in_one_trip_and_each_gets_its_own_answer(redis_server):
    key, listed = f"count:{uuid.uuid4().hex}", f"list:{uuid.uuid4().hex}"

    async def run():
        client = Redis.from_url(redis_server.url)
        batcher = ScriptBatcher(client, COUNT_UP)
        trips: list[int] = []
        original = batcher._trip

        async def counted(batch):
            trips.append(len(batch))
            return await original(batch)

        batcher._trip = counted  # type: ignore[method-assign]
        try:
            await client.rpush(listed, "x")
            answers = await asyncio.gather(
                *(batcher([key], [10]) for _ in range(40)),
                batcher([listed], [1]),
                return_exceptions=True,
            )
            later = await batcher([key], [1])  # a lone call, in a turn of its own
        finally:
            await client.aclose()
        return answers, later, trips

    answers, later, trips = asyncio.run(run())
    counts, failed = answers[:40], answers[40]
    assert sorted(counts) == [10 * n for n in range(1, 41)], "each call ran once, atomically"
    assert isinstance(failed, Exception) and "WRONGTYPE" in str(failed)
    assert later == 41
    # the script was not loaded yet: one trip refused, the script loaded, the 41 sent again
    assert trips == [41, 41, 1]


def test_a_lost_script_is_loaded_again_and_a_dead_redis_fails_every_caller(redis_server):
    key = f"count:{uuid.uuid4().hex}"

    async def run():
        client = Redis.from_url(redis_server.url)
        batcher = ScriptBatcher(client, COUNT_UP)
        try:
            first = await asyncio.gather(*(batcher([key], [1]) for _ in range(3)))
            await client.script_flush()
            again = await asyncio.gather(*(batcher([key], [1]) for _ in range(3)))
        finally:
            await client.aclose()
        dead = Redis(port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
        nowhere = ScriptBatcher(dead, COUNT_UP)
        down = await asyncio.gather(*(nowhere([key], [1]) for _ in range(3)),
                                    return_exceptions=True)  # fmt: skip
        return first, again, down

    first, again, down = asyncio.run(run())
    assert sorted(first) == [1, 2, 3] and sorted(again) == [4, 5, 6]
    assert all(isinstance(d, RedisConnectionError) for d in down), down


@pytest.mark.parametrize("max_trips", [1, 2])
def test_calls_made_while_every_trip_is_out_go_together_in_the_next(redis_server, max_trips):
    """Up to `max_trips` trips are out at once: a call made while fewer are out leaves at
    once, and the calls made while all are out wait and go together in the next."""
    key = f"count:{uuid.uuid4().hex}"

    async def run():
        client = Redis.from_url(redis_server.url)
        batcher = ScriptBatcher(client, COUNT_UP, max_trips=max_trips)
        await client.script_load(COUNT_UP)
        trips: list[int] = []
        trip_out = [asyncio.Event() for _ in range(max_trips)]
        release = asyncio.Event()
        original = batcher._trip

        async def held(batch):
            trips.append(len(batch))
            if len(trips) <= max_trips:
                trip_out[len(trips) - 1].set()
                await release.wait()
            return await original(batch)

        batcher._trip = held  # type: ignore[method-assign]
        try:
            first = []
            for out in trip_out:  # each call finds room and leaves without waiting
                first.append(asyncio.ensure_future(batcher([key], [1])))
                await asyncio.wait_for(out.wait(), 2)
            later = [asyncio.ensure_future(batcher([key], [1])) for _ in range(10)]
            await asyncio.sleep(0.05)  # they wait for a trip to come back
            assert trips == [1] * max_trips
            release.set()
            answers = [*(await asyncio.gather(*first)), *(await asyncio.gather(*later))]
        finally:
            await client.aclose()
        return answers, trips

    answers, trips = asyncio.run(run())
    assert sorted(answers) == list(range(1, 11 + max_trips))
    assert trips == [1] * max_trips + [10]


@pytest.mark.parametrize("max_trips", [1, 2])
def test_every_call_is_answered_however_the_turns_fall(redis_server, max_trips):
    """A call made as soon as the one before it is answered (the turn its trip's sender ends
    in), and waves of calls at random moments as trips come and go: none is left waiting for
    a sender that has ended."""
    key = f"count:{uuid.uuid4().hex}"
    rng = random.Random(15)

    async def run():
        client = Redis.from_url(redis_server.url)
        batcher = ScriptBatcher(client, COUNT_UP, timeout_s=2, max_trips=max_trips)

        async def call_after(turns: int) -> int:
            for _ in range(turns):
                await asyncio.sleep(0)
            return await batcher([key], [1])

        async def one_after_another() -> list[int]:
            return [await batcher([key], [1]) for _ in range(20)]

        try:
            answers = await asyncio.wait_for(one_after_another(), 5)
            for _ in range(100):
                wave = [call_after(rng.randrange(6)) for _ in range(rng.randrange(1, 12))]
                answers += await asyncio.wait_for(asyncio.gather(*wave), 5)
        finally:
            await client.aclose()
        return answers

    answers = asyncio.run(run())
    assert sorted(answers) == list(range(1, len(answers) + 1))


def test_closing_while_a_trip_is_out_leaves_no_caller_waiting(redis_server):
    async def run():
        client = Redis.from_url(redis_server.url)
        batcher = ScriptBatcher(client, COUNT_UP)
        out, never = asyncio.Event(), asyncio.Event()

        async def stuck(batch):
            out.set()
            await never.wait()  # Redis does not answer

        batcher._trip = stuck  # type: ignore[method-assign]
        try:
            calls = [asyncio.ensure_future(batcher(["k"], [1]))]
            await out.wait()
            calls += [asyncio.ensure_future(batcher(["k"], [1])) for _ in range(3)]
            await asyncio.sleep(0)
            await asyncio.wait_for(batcher.close(), 2)
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await client.aclose()
        return outcomes

    outcomes = asyncio.run(run())
    assert len(outcomes) == 4
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)


def test_closing_before_the_first_trip_leaves_no_caller_waiting(redis_server):
    """Closed in the turn after a call (its trip's sender made, not yet run): the call is
    cancelled, not left waiting for a trip that never goes."""

    async def run():
        client = Redis.from_url(redis_server.url)
        batcher = ScriptBatcher(client, COUNT_UP)
        try:
            call = asyncio.ensure_future(batcher(["k"], [1]))
            await asyncio.sleep(0)  # the call is queued; its sender has not run yet
            await batcher.close()  # (not in a task of its own: the sender would run first)
            (outcome,) = await asyncio.wait_for(asyncio.gather(call, return_exceptions=True), 2)
        finally:
            await client.aclose()
        return outcome

    assert isinstance(asyncio.run(run()), asyncio.CancelledError)


def test_a_silent_redis_fails_the_trip_at_its_timeout_and_its_connection_is_not_reused(
    redis_server,
):
    """A Redis that takes the request and never answers (stalled, or a black-holed link): the
    trips' calls fail after `timeout_s`, not never. The next trip goes out on a fresh
    connection, so no late answer is read as another call's."""
    key = f"count:{uuid.uuid4().hex}"

    sent: list[bytes] = []

    async def run():
        connections = 0

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            sent.append(await reader.read(65536))  # the request arrives; no answer
            await asyncio.sleep(5)
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        # no HELLO, no CLIENT SETINFO on connect: the script's call is the first thing sent
        client = Redis(port=port, retry=Retry(NoBackoff(), 0), driver_info=None, protocol=2)
        batcher = ScriptBatcher(client, COUNT_UP, timeout_s=0.3)
        started = asyncio.get_running_loop().time()
        try:
            first = asyncio.ensure_future(batcher([key], [1]))
            await asyncio.sleep(0.05)
            behind = [asyncio.ensure_future(batcher([key], [1])) for _ in range(3)]
            failed = await asyncio.gather(first, *behind, return_exceptions=True)
            waited = asyncio.get_running_loop().time() - started
            again = await asyncio.gather(batcher([key], [1]), return_exceptions=True)
        finally:
            await client.aclose()
            server.close()
        return failed, waited, again, connections

    failed, waited, again, connections = asyncio.run(run())
    assert all(isinstance(f, TimeoutError) for f in failed), failed
    assert "did not answer within 0.3 s" in str(failed[0])
    assert waited < 1.5
    # the first call's trip and the second trip (the three behind it) took a connection each,
    # and neither was reused: the call after them opened a third
    assert isinstance(again[0], TimeoutError) and connections == 3
    assert all(b"EVALSHA" in request for request in sent), sent
