"""A connection's writes of one event-loop turn leave in one send (gekko.turn_writes)."""

from __future__ import annotations

import asyncio

from gekko.turn_writes import FLUSH_AT, TurnWrites


class Transport:
    def __init__(self):
        self.sent: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data):
        self.sent.append(data)

    def is_closing(self):
        return self.closed or self.aborted

    def close(self):
        self.closed = True

    def abort(self):
        self.aborted = True

    def get_extra_info(self, name):
        return ("127.0.0.1", 8000) if name == "sockname" else None


def test_a_responses_head_and_body_leave_in_one_send_at_the_end_of_the_turn():
    async def main():
        transport = Transport()
        writes = TurnWrites(transport, asyncio.get_running_loop())
        writes.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        writes.write(b"{}")
        assert transport.sent == []  # held until the turn ends
        await asyncio.sleep(0)
        assert transport.sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        # The next turn's response is a send of its own; nothing is sent twice.
        writes.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(transport.sent) == 2
        # Everything else is the transport's.
        assert writes.get_extra_info("sockname") == ("127.0.0.1", 8000)

    asyncio.run(main())


def test_a_large_body_is_not_held_and_closing_sends_what_is_held_first():
    async def main():
        transport = Transport()
        writes = TurnWrites(transport, asyncio.get_running_loop())
        writes.write(b"head")
        writes.write(b"x" * FLUSH_AT)
        assert transport.sent == [b"head", b"x" * FLUSH_AT]  # in order, the large one as it is
        transport.sent.clear()
        writes.writelines([b"a" * (FLUSH_AT // 2), b"b" * (FLUSH_AT // 2)])  # together, a lot
        assert transport.sent == [b"a" * (FLUSH_AT // 2) + b"b" * (FLUSH_AT // 2)]
        writes.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        writes.close()
        assert transport.sent[-1] == b"HTTP/1.1 408 Request Timeout\r\n\r\n" and transport.closed
        await asyncio.sleep(0)
        assert len(transport.sent) == 2  # the turn's end finds nothing left to send
        # An aborted connection sends nothing it held.
        aborted = Transport()
        writes = TurnWrites(aborted, asyncio.get_running_loop())
        writes.write(b"partial")
        writes.abort()
        await asyncio.sleep(0)
        assert aborted.sent == [] and aborted.aborted

    asyncio.run(main())
