"""A connection's writes of one event-loop turn sent as one.

uvicorn writes a response's status line and headers when the app sends `http.response.start`,
and its body with `http.response.body`: two sends to the socket for every response, though the
app (the gateway's proxy, a JSON answer) gives both in the same turn. TurnWrites holds what is
written during a turn and sends it at the turn's end, once: a send system call fewer per
response, and one TCP segment instead of two for a small one. Nothing waits longer than the
turn, and a write that would hold more than FLUSH_AT bytes goes out at once, so a large or
streamed body is not gathered in memory (the transport's own flow control applies as before).
Closing sends what is held first.
"""

from __future__ import annotations

import asyncio
from typing import Any

FLUSH_AT = 64 * 1024


class TurnWrites:
    """Stands in for `transport` where the protocol writes; everything else is the transport's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if len(data) >= FLUSH_AT:  # large: what is held goes first, then this as it is
            self.flush()
            self._transport.write(data)
            return
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data))
        self._size += len(data)
        if self._size >= FLUSH_AT:
            self.flush()

    def writelines(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Send what the turn wrote (a no-op when it was sent already)."""
        if not self._held:
            return
        held, self._held, self._size = self._held, [], 0
        if not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held, self._size = [], 0
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
