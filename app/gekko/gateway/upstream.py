"""The proxy's HTTP/1.1 client: pooled keep-alive connections to the service instances.

The gateway forwards every /api/v1 request to an instance it already knows (discovery gives
its base URL), with headers it has already filtered, and needs the whole answer back as bytes.
A general client (aiohttp, which the gateway still uses for health checks and the API
documents) does per request what the proxy never needs: URL parsing, cookie and redirect
handling, header objects built and serialised again, a stream reader per response. That was a
quarter of the gateway's CPU per request (docs/benchmarks.md, issue 15). Here a request is one
write of bytes built from the caller's header pairs, and the answer is parsed by httptools
(llhttp, the parser uvicorn serves the gateway with) straight into a list of header pairs and
a body.

Per instance, idle connections are reused newest first. One idle for `keepalive_s` is closed
(services keep theirs open longer, so the gateway is the one to close), and so is one the
instance closed. A reused connection the instance closed before answering is tried again once
on a new connection when the request may be sent twice (aiohttp did the same). At most
`limit_per_origin` connections are open to an instance; further requests wait for one, as long
as connecting may take.

Errors say how far the request got, which decides whether the proxy may resend it elsewhere:
`ConnectFailed` (never sent: no connection, or none free in time, or an unusable URL),
`UpstreamTimeout` (sent, no complete answer in time), `ResponseFailed` (the connection broke,
or the answer was not HTTP). A connection is reused only after a complete answer allowing it.

A HEAD answer is complete at the end of its headers. One without a length (or chunked) would
end at the close, so its connection is closed rather than reused; none of the services send
such an answer.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import urlsplit

import httptools

Headers = list[tuple[bytes, bytes]]


class UpstreamError(Exception):
    """The request got no complete answer."""


class ConnectFailed(UpstreamError):
    """The request was never sent: no connection could be made or had in time."""


class UpstreamTimeout(UpstreamError):
    """The request was sent; no complete answer came before the deadline."""


class ResponseFailed(UpstreamError):
    """The connection broke, or the answer was not valid HTTP, after the request was sent."""


class _Unexpected(Exception):
    """Raised in a parser callback: bytes the connection was not waiting for."""


class Response(NamedTuple):
    status: int
    headers: Headers  # as received: names in their case, repeated names kept
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.reusable = False
        self.requests = 0  # sent on this connection, the current one included
        self.answered_any = False  # a byte of the current answer arrived
        self._answer: asyncio.Future[Response] | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._head_only = False
        self._headers: Headers = []
        self._body: list[bytes] = []
        self._status = 0
        self._framed = False  # a length or chunked: the answer does not end at the close
        self._headers_done = False

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answered_any = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(ResponseFailed(f"invalid HTTP answer: {exc!r}"))
            self.close()
            return
        if self._head_only and self._answer is None:
            # A HEAD answer has no body, whatever its headers announce: the next answer starts
            # afresh, so the connection stays usable.
            self._parser = httptools.HttpResponseParser(self)
            self._head_only = False

    def eof_received(self) -> bool | None:
        self.reusable = False  # the instance closed its side: never reuse
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self.transport = None
        if self._answer is None or self._answer.done():
            return
        if self._headers_done and not self._framed and exc is None:
            self._finish()  # an answer delimited by the close, and the close was clean
            return
        reason = f": {exc}" if exc else ""
        self._fail(ResponseFailed(f"connection closed before the answer ended{reason}"))

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        if self._answer is None:  # nothing asked, or asked and answered: out of turn
            raise _Unexpected

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._headers_done:  # a chunked body's trailers: not passed on
            return
        lower = name.lower()
        if lower == b"content-length" or (
            lower == b"transfer-encoding" and value.rstrip().lower().endswith(b"chunked")
        ):
            self._framed = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        if 100 <= self._status < 200:  # informational (100 Continue): the answer follows
            return
        self._headers_done = True
        if self._head_only:
            self._finish(keep_alive=self._parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._headers_done:  # the end of an informational answer
            self._headers, self._body, self._framed = [], [], False
            return
        if self._answer is not None and not self._answer.done():
            self._finish(keep_alive=self._parser.should_keep_alive())

    # --
    def send(self, method: bytes, request: bytes) -> asyncio.Future[Response]:
        self.reusable = False
        self.answered_any = False
        self.requests += 1
        if self.transport is None:
            raise ResponseFailed("the connection closed before the request was sent")
        self._answer = self._loop.create_future()
        self._head_only = method == b"HEAD"
        self._headers, self._body, self._status = [], [], 0
        self._framed = self._headers_done = False
        self.transport.write(request)
        return self._answer

    def _finish(self, *, keep_alive: bool = False) -> None:
        answer, self._answer = self._answer, None
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self.reusable = keep_alive and self.open
        if answer is not None and not answer.done():
            answer.set_result(Response(self._status, self._headers, body))

    def _fail(self, error: Exception) -> None:
        answer, self._answer = self._answer, None
        self.reusable = False
        if answer is not None and not answer.done():
            answer.set_exception(error)

    def close(self) -> None:
        self._fail(ResponseFailed("the connection was closed"))
        if self.transport is not None:
            self.transport.close()


@dataclass
class _Origin:
    host: str
    port: int
    tls: bool
    host_header: bytes
    path: bytes  # a base URL's path, put before every target
    idle: list[_Connection] = field(default_factory=list)
    open: int = 0  # connections open or being opened
    waiting: list[asyncio.Future[_Connection | None]] = field(default_factory=list)


def _origin_of(url: str) -> _Origin:
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise ConnectFailed(f"unusable instance URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ConnectFailed(f"unusable instance URL {url!r}: not http(s)://host[:port]")
    tls = parts.scheme == "https"
    port = port or (443 if tls else 80)
    name = f"[{host}]" if ":" in host else host
    try:
        host_header = name.encode("idna") + b":%d" % port
    except UnicodeError as exc:
        raise ConnectFailed(f"unusable instance URL {url!r}: {exc}") from None
    return _Origin(host, port, tls, host_header, parts.path.rstrip("/").encode())


class UpstreamClient:
    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_s: float = 30.0,
        connect_timeout_s: float = 1.0,
        limit_per_origin: int = 256,
    ) -> None:
        self._ssl = ssl_context
        self.keepalive_s = keepalive_s
        self.connect_timeout_s = connect_timeout_s
        self.limit_per_origin = limit_per_origin
        self._origins: dict[str, _Origin] = {}
        self._reaper: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(
        self,
        origin: str,
        method: str,
        target: bytes,
        headers: Headers,
        body: bytes = b"",
        *,
        timeout_s: float,
        may_resend: bool = False,
    ) -> Response:
        """`method target` on `origin` (an instance's base URL) with `headers` (Host and
        Content-Length are set here), its whole answer read within `timeout_s`. `may_resend`:
        the request may be sent twice (idempotent), so a reused connection the instance had
        closed is no failure: it is sent once more on a new one."""
        o = self._origins.get(origin)
        if o is None:
            o = self._origins[origin] = _origin_of(origin)
        method_b = method.encode("ascii")
        request = _serialise(method_b, o.path + target, o.host_header, headers, body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for attempt in (1, 2):
            conn = self._idle_connection(o) if attempt == 1 else None  # then a new one
            if conn is None:
                connect_by = min(deadline, loop.time() + self.connect_timeout_s)
                conn = await self._acquire(o, connect_by, take_idle=attempt == 1)
            if not conn.open and conn.requests == 0:  # accepted, then closed at once
                self._release(o, conn)
                raise ConnectFailed(f"{origin} closed the connection before the request")
            try:
                answer = conn.send(method_b, request)
                # A timer on the answer itself: cheaper than a timeout scope around the await.
                timer = loop.call_at(deadline, _expire, answer, origin, timeout_s)
                try:
                    return await answer
                finally:
                    timer.cancel()
            except ResponseFailed:
                # kept alive from an earlier request, and closed by the instance unanswered
                stale = conn.requests > 1 and not conn.answered_any
                if not (stale and may_resend and attempt == 1):
                    raise
            finally:
                self._release(o, conn)
        raise AssertionError("unreachable")  # pragma: no cover

    def _idle_connection(self, o: _Origin) -> _Connection | None:
        now = time.monotonic()
        while o.idle:
            conn = o.idle.pop()  # the newest: the most likely to be warm and still open
            if conn.reusable and conn.open and now - conn.idle_since < self.keepalive_s:
                return conn
            self._discard(o, conn)
        return None

    async def _acquire(self, o: _Origin, deadline: float, *, take_idle: bool) -> _Connection:
        """A connection by `deadline`: an idle one, a new one while under the limit, or one
        handed back; else ConnectFailed (nothing was sent). Requests already waiting go
        first: a slot freed for one is kept for it."""
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    if self._closed:
                        raise ConnectFailed("the upstream client is closed")
                    idle = self._idle_connection(o) if take_idle else None
                    if idle is not None:
                        return idle
                    if o.open < self.limit_per_origin and not _live(o.waiting):
                        return await self._connect(o)
                    handed = await self._wait_turn(o)
                    if handed is None:  # a slot, counted for us already
                        return await self._connect(o, reserved=True)
                    if handed.reusable and handed.open:
                        return handed
                    self._discard(o, handed)  # closed meanwhile: its slot goes to the next
        except TimeoutError:
            raise ConnectFailed(
                f"no connection to {o.host}:{o.port} in time: none free, or connecting took "
                f"too long (at most {self.connect_timeout_s:g} s, or the request's deadline)"
            ) from None

    async def _wait_turn(self, o: _Origin) -> _Connection | None:
        """Wait for a connection handed back (returned) or a slot kept for us (None)."""
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        o.waiting.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()
                if handed is not None:
                    self._release(o, handed)  # handed over as we gave up: pass it on
                else:
                    self._slot_freed(o)  # the slot kept for us goes to the next in line
            if waiter in o.waiting:
                o.waiting.remove(waiter)
            raise

    async def _connect(self, o: _Origin, *, reserved: bool = False) -> _Connection:
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if o.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        if not reserved:
            o.open += 1
        try:
            _, conn = await loop.create_connection(
                lambda: _Connection(loop),
                o.host,
                o.port,
                ssl=context,
                server_hostname=o.host if context is not None else None,
            )
        except OSError as exc:  # refused, unreachable, TLS handshake failed
            self._slot_freed(o)
            raise ConnectFailed(f"could not connect to {o.host}:{o.port}: {exc}") from exc
        except BaseException:  # timed out or cancelled
            self._slot_freed(o)
            raise
        return conn

    def _release(self, o: _Origin, conn: _Connection) -> None:
        """Back to the pool after a complete answer that allows it; else closed."""
        if not conn.reusable or not conn.open or self._closed:
            self._discard(o, conn)
            return
        while o.waiting:
            waiter = o.waiting.pop(0)
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_since = time.monotonic()
        o.idle.append(conn)
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().call_later(self.keepalive_s, self._reap)

    def _discard(self, o: _Origin, conn: _Connection) -> None:
        conn.close()
        self._slot_freed(o)

    def _slot_freed(self, o: _Origin) -> None:
        o.open -= 1
        self._wake(o)

    @staticmethod
    def _wake(o: _Origin) -> None:
        """A connection's slot is free: it is kept for the first request waiting, which opens
        a new connection in it."""
        while o.waiting:
            waiter = o.waiting.pop(0)
            if not waiter.done():
                o.open += 1
                waiter.set_result(None)
                return

    def _reap(self) -> None:
        """Close connections idle past `keepalive_s` (or closed by their instance) and forget
        instances with nothing open; runs while any connection is idle."""
        self._reaper = None
        now = time.monotonic()
        for url, o in list(self._origins.items()):
            for conn in [c for c in o.idle if not c.open or now - c.idle_since >= self.keepalive_s]:
                o.idle.remove(conn)
                self._discard(o, conn)
            if o.open == 0 and not o.waiting:
                del self._origins[url]
        if any(o.idle for o in self._origins.values()):
            self._reaper = asyncio.get_running_loop().call_later(self.keepalive_s / 2, self._reap)

    async def close(self) -> None:
        """Close idle connections; those in use close when their answer is read."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for o in self._origins.values():
            for conn in o.idle:
                conn.close()
            o.open -= len(o.idle)
            o.idle.clear()
            for waiter in o.waiting:
                if not waiter.done():
                    waiter.set_exception(ConnectFailed("the upstream client is closed"))
            o.waiting.clear()


def _live(waiting: list[asyncio.Future[_Connection | None]]) -> bool:
    return any(not waiter.done() for waiter in waiting)


def _expire(answer: asyncio.Future[Response], origin: str, timeout_s: float) -> None:
    if not answer.done():
        answer.set_exception(UpstreamTimeout(f"no answer from {origin} within {timeout_s:g} s"))


def _serialise(method: bytes, target: bytes, host: bytes, headers: Headers, body: bytes) -> bytes:
    parts = [method, b" ", target, b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if body or method in (b"POST", b"PUT", b"PATCH"):
        parts += (b"content-length: ", str(len(body)).encode(), b"\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)
