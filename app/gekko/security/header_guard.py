"""Slow and oversized request headers are cut off before the application sees them.

uvicorn's HTTP protocol (httptools) waits for headers as long as a client keeps sending, and
holds any amount of them: a client that sends one header byte every few seconds (slowloris)
or megabytes of headers holds a connection and memory for free. This protocol gives each
request's headers a deadline, counted from the connection's start or the request's first byte,
and a size limit, as nginx's `client_header_timeout` and `large_client_header_buffers` do:

- headers not complete within `header_timeout_s`: `408` (problem+json) and the connection closes;
  a connection that never sent a byte is closed silently;
- headers over `max_header_bytes` (request line included): `431` and the connection closes.

Once the headers are in, the deadline stops: bodies are the body limit's (gekko.security.body_limit)
and idle keep-alive connections uvicorn's own `timeout_keep_alive`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gekko.config import DEFAULT_HEADER_TIMEOUT_S, DEFAULT_MAX_HEADER_BYTES
from gekko.problems import PROBLEM_TYPE_BASE, problem_body
from gekko.turn_writes import TurnWrites

log = logging.getLogger("gekko.security")


class _HeadersTooLarge(Exception):
    """Raised from the parser's callbacks; httptools reports it as a parse error."""


def closing_problem(status: int, slug: str, detail: str) -> bytes:
    """A complete HTTP/1.1 problem+json answer that ends the connection."""
    body = orjson.dumps(problem_body(status, detail, type_=f"{PROBLEM_TYPE_BASE}{slug}"))
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: application/problem+json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._request_started = False
        self._too_large = False

    # -- the deadline -------------------------------------------------------------------------

    def _arm(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _too_slow(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing():
            return
        if self._request_started:
            log.warning(
                "request headers from %s not complete within %s s: connection closed (408)",
                self._peer(),
                self.header_timeout_s,
            )
            self.transport.write(
                closing_problem(
                    408,
                    "request-timeout",
                    f"the request headers did not arrive within {self.header_timeout_s:g} s",
                )
            )
        self.transport.close()

    def _peer(self) -> str:
        return self.client[0] if self.client else "unknown"

    # -- protocol and parser callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A response's head and body leave in one send (gekko.turn_writes); uvicorn's flow
        # control keeps the transport itself.
        self.transport = TurnWrites(transport, self.loop)  # type: ignore[assignment]
        self._arm()  # a connection that sends nothing at all is cut off too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_started = True
        self._header_bytes = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._request_started = False
        super().on_headers_complete()

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            self._too_large = True
            raise _HeadersTooLarge

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers every parse error with 400; ours is the size limit, which has its own.
        if not self._too_large:
            super().send_400_response(msg)
            return
        self._disarm()
        log.warning(
            "request headers from %s over %d bytes: connection closed (431)",
            self._peer(),
            self.max_header_bytes,
        )
        self.transport.write(
            closing_problem(
                431,
                "headers-too-large",
                f"the request line and headers are larger than {self.max_header_bytes} bytes",
            )
        )
        self.transport.close()


def guarded_protocol(header_timeout_s: float, max_header_bytes: int) -> type[HttpToolsProtocol]:
    """The protocol class for uvicorn.Config(http=...), with these limits."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"header_timeout_s": header_timeout_s, "max_header_bytes": max_header_bytes},
    )
