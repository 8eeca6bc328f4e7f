"""Log lines made on the event loop go out in one write per loop turn, in order, and warnings
are never held back (gekko.logs.TurnBatchingHandler)."""

from __future__ import annotations

import asyncio
import io
import logging

from gekko.logs import TurnBatchingHandler


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _logger(stream: CountingStream) -> logging.Logger:
    logger = logging.getLogger(f"test.batching.{id(stream)}")
    logger.handlers[:] = [TurnBatchingHandler(stream)]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def test_lines_of_one_turn_are_written_together_and_warnings_at_once():
    stream = CountingStream()
    log = _logger(stream)

    async def requests() -> tuple[str, tuple[str, int]]:
        for n in range(3):
            log.info("request %d", n)
        held = stream.getvalue()
        await asyncio.sleep(0)  # the turn ends: the three lines are written
        after_turn = stream.getvalue(), stream.writes
        log.info("request 3")
        log.warning("upstream failed")  # written now, after the line before it
        return held, after_turn

    held, after_turn = asyncio.run(requests())
    assert held == ""
    assert after_turn == ("request 0\nrequest 1\nrequest 2\n", 1)
    assert stream.getvalue().splitlines()[3:] == ["request 3", "upstream failed"]


def _log_in_a_loops_last_turn(log: logging.Logger, message: str) -> None:
    """The loop stops before the write the line scheduled can run."""
    loop = asyncio.new_event_loop()
    loop.call_soon(lambda: (log.info(message), loop.stop()))
    loop.run_forever()
    loop.close()


def test_off_the_loop_a_line_is_written_at_once_and_nothing_pending_is_lost():
    stream = CountingStream()
    log = _logger(stream)
    log.info("starting")
    assert stream.getvalue() == "starting\n"

    _log_in_a_loops_last_turn(log, "stopping")
    assert stream.getvalue() == "starting\n"
    log.handlers[0].flush()  # what logging.shutdown() does at exit
    assert stream.getvalue() == "starting\nstopping\n"

    _log_in_a_loops_last_turn(log, "stranded")

    async def on_a_new_loop() -> None:
        log.info("started again")

    asyncio.run(on_a_new_loop())  # the new loop schedules a write of its own
    assert stream.getvalue().splitlines()[2:] == ["stranded", "started again"]


def test_timestamps_are_exactly_what_datetime_writes():
    from datetime import UTC, datetime

    from gekko.logs import iso_millis

    edges = [0.0, 900500637.8919997, 1796534400.9995, 1796534400.9999996, 1796534400.0004999]
    for created in edges + [1796534400 + n / 997 for n in range(2000)]:
        expected = datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds")
        assert iso_millis(created) == expected, created
