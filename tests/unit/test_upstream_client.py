"""The proxy's upstream client against scripted loopback servers (asyncio, raw bytes)."""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from gekko.config import TlsFiles
from gekko.gateway.upstream import (
    ConnectFailed,
    Response,
    ResponseFailed,
    UpstreamClient,
    UpstreamTimeout,
)
from gekko.tls import client_context
from pki import make_pki

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def run(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Each test in an event loop of its own (the suite has no asyncio plugin)."""

    @functools.wraps(test)
    def sync(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 10))

    return sync


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"


class Server:
    """Answers each request on a connection with `answer(request_head, body)` bytes, or runs
    `handler` for the whole connection; counts connections."""

    def __init__(self, answer: bytes = OK, handler: Handler | None = None) -> None:
        self.answer = answer
        self.handler = handler
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.server: asyncio.Server | None = None

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.handler is not None:
                await self.handler(reader, writer)
                return
            while True:
                head, body = await read_request(reader)
                if not head:
                    return
                self.requests.append((head, body))
                writer.write(self.answer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b"", b""
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length) if length else b""


async def get(
    client: UpstreamClient, url: str, method: str = "GET", body: bytes = b"", **kw: Any
) -> Response:
    return await client.request(url, method, b"/x?y=1", [(b"accept", b"*/*")], body,
                                timeout_s=kw.pop("timeout_s", 2.0), **kw)  # fmt: skip


@run
async def test_keep_alive_reuses_one_connection_and_sends_host_and_length():
    server = Server()
    url = await server.start()
    client = UpstreamClient()
    first = await get(client, url, "POST", b'{"a":1}')
    second = await get(client, url)
    assert (first.status, first.body, second.body) == (200, b"ok", b"ok")
    assert (b"content-type", b"text/plain") in first.headers
    assert server.connections == 1
    head, body = server.requests[0]
    assert head.startswith(b"POST /x?y=1 HTTP/1.1\r\n")
    assert f"host: {url.removeprefix('http://')}\r\n".encode() in head
    assert b"content-length: 7\r\n" in head and body == b'{"a":1}'
    assert b"content-length" not in server.requests[1][0]  # a GET without a body
    await client.close()
    await server.stop()


@run
async def test_chunked_and_repeated_headers_are_read_whole():
    answer = (
        b"HTTP/1.1 201 Created\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    server = Server(answer)
    url = await server.start()
    client = UpstreamClient()
    response = await get(client, url)
    assert response.status == 201 and response.body == b"abcde"
    assert [v for k, v in response.headers if k == b"Set-Cookie"] == [b"a=1", b"b=2"]
    await get(client, url)
    assert server.connections == 1  # a chunked answer ends cleanly: the connection is reused
    await client.close()
    await server.stop()


@run
async def test_an_answer_that_ends_at_close_is_complete_and_not_reused():
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
        await writer.drain()  # then closed: that ends the body

    server = Server(handler=until_close)
    url = await server.start()
    client = UpstreamClient()
    assert (await get(client, url)).body == b"until the end"
    assert (await get(client, url)).body == b"until the end"
    assert server.connections == 2
    await client.close()
    await server.stop()


@run
async def test_head_answer_does_not_wait_for_the_body_its_length_announces():
    server = Server(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
    url = await server.start()
    client = UpstreamClient()
    response = await get(client, url, "HEAD", timeout_s=1.0)
    assert response.status == 200 and response.body == b""
    assert (b"content-length", b"1000") in response.headers
    server.answer = OK  # the next answer on the same connection is read afresh
    assert (await get(client, url)).body == b"ok"
    assert server.connections == 1
    await client.close()
    await server.stop()


@run
async def test_informational_answers_are_skipped():
    server = Server(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n" + OK)
    url = await server.start()
    client = UpstreamClient()
    response = await get(client, url, "POST", b"x")
    assert (response.status, response.body) == (200, b"ok")
    assert b"link" not in {
        k for k, _ in response.headers
    }  # the hint's headers are not the answer's
    assert (await get(client, url)).body == b"ok"  # and the connection stays in step
    await client.close()
    await server.stop()


@run
async def test_refused_connection_is_connect_failed():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = UpstreamClient()
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(ConnectFailed, match="could not connect"):
        await get(client, url)
    assert client._origins[url].open == 0  # the slot is free again
    await client.close()


@run
async def test_silent_upstream_times_out_and_its_connection_is_not_reused():
    calls = 0

    async def silent_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        while True:
            head, _ = await read_request(reader)
            if not head:
                return
            if calls > 1:
                writer.write(OK)
                await writer.drain()

    server = Server(handler=silent_first)
    url = await server.start()
    client = UpstreamClient()
    with pytest.raises(UpstreamTimeout):
        await get(client, url, timeout_s=0.2)
    assert client._origins[url].open == 0
    # the late answer could arrive on that connection: a fresh one is used
    assert (await get(client, url)).body == b"ok"
    assert server.connections == 2 and client._origins[url].open == 1
    await client.close()
    await server.stop()


@run
async def test_connection_broken_mid_answer_is_response_failed():
    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await writer.drain()

    server = Server(handler=half)
    url = await server.start()
    client = UpstreamClient()
    with pytest.raises(ResponseFailed, match="closed before the answer ended"):
        await get(client, url)
    await client.close()
    await server.stop()


@run
async def test_garbage_answer_is_response_failed():
    server = Server(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    url = await server.start()
    client = UpstreamClient()
    with pytest.raises(ResponseFailed, match="invalid HTTP answer"):
        await get(client, url)
    await client.close()
    await server.stop()


@run
async def test_idle_connection_closed_by_the_upstream_is_not_used():
    async def one_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()

    server = Server(handler=one_then_close)
    url = await server.start()
    client = UpstreamClient()
    await get(client, url)
    await asyncio.sleep(0.05)  # the server's close arrives while the connection is idle
    assert (await get(client, url)).body == b"ok"
    assert server.connections == 2
    await client.close()
    await server.stop()


@run
async def test_idle_connection_past_keepalive_is_replaced():
    server = Server()
    url = await server.start()
    client = UpstreamClient(keepalive_s=0.05)
    await get(client, url)
    await asyncio.sleep(0.1)
    await get(client, url)
    assert server.connections == 2
    await client.close()
    await server.stop()


@run
async def test_requests_beyond_the_limit_wait_for_a_connection():
    release = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader)
            if not head:
                return
            await release.wait()
            writer.write(OK)
            await writer.drain()

    server = Server(handler=slow)
    url = await server.start()
    client = UpstreamClient(limit_per_origin=1)
    first = asyncio.ensure_future(get(client, url))
    second = asyncio.ensure_future(get(client, url))
    gave_up = asyncio.ensure_future(get(client, url))
    await asyncio.sleep(0.05)
    gave_up.cancel()  # a waiter that gives up holds no slot
    release.set()
    assert [r.body for r in await asyncio.gather(first, second)] == [b"ok", b"ok"]
    assert server.connections == 1
    assert (await get(client, url)).body == b"ok"
    assert client._origins[url].open == 1 and not client._origins[url].waiting
    await client.close()
    await server.stop()


@run
async def test_tls_upstream_is_verified_against_the_internal_ca(tmp_path: Path):
    pki = make_pki(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(pki.cert, pki.key)
    server = Server()
    url = await server.start(server_context)
    # the gateway's own context: the internal CA, TLS 1.3, its certificate for mutual TLS
    client = UpstreamClient(
        ssl_context=client_context(TlsFiles(str(pki.ca), str(pki.cert), str(pki.key)))
    )
    assert url.startswith("https://") and (await get(client, url)).body == b"ok"
    await client.close()
    stranger = UpstreamClient()  # the system's CAs do not know the internal one
    with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
        await get(stranger, url)
    await stranger.close()
    await server.stop()


@run
async def test_a_reused_connection_closed_unanswered_is_retried_once_when_it_may_be():
    """The keep-alive race: the instance closes an idle connection as a request is written on
    it. A request that may be sent twice goes again on a new connection; one that may not
    fails (it may have been processed)."""
    served = 0

    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await read_request(reader)
        served += 1
        writer.write(OK)
        await writer.drain()
        await read_request(reader)  # the next request on this connection: closed unanswered

    server = Server(handler=answer_once)
    url = await server.start()
    client = UpstreamClient()
    await get(client, url)
    assert (await get(client, url, may_resend=True)).body == b"ok"
    assert server.connections == 2 and served == 2
    with pytest.raises(ResponseFailed, match="closed before the answer ended"):
        await get(client, url, "POST", b"x", may_resend=False)
    assert served == 2  # the POST was not written twice
    await client.close()
    await server.stop()


@run
async def test_waiting_for_a_free_connection_past_the_connect_timeout_is_connect_failed():
    release = asyncio.Event()

    async def held(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await release.wait()
        writer.write(OK)
        await writer.drain()

    server = Server(handler=held)
    url = await server.start()
    client = UpstreamClient(limit_per_origin=1, connect_timeout_s=0.1)
    busy = asyncio.ensure_future(get(client, url))
    await asyncio.sleep(0.05)
    with pytest.raises(ConnectFailed, match="no connection"):  # nothing was sent
        await get(client, url)
    release.set()
    assert (await busy).body == b"ok"
    assert client._origins[url].open == 1 and not client._origins[url].waiting
    await client.close()
    await server.stop()


@run
async def test_a_body_ending_at_a_reset_is_not_taken_as_complete():
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\npart of it")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST, not FIN

    server = Server(handler=reset)
    url = await server.start()
    client = UpstreamClient()
    with pytest.raises(ResponseFailed):
        await get(client, url)
    await client.close()
    await server.stop()


@run
async def test_bytes_after_a_complete_answer_spoil_the_connection_not_the_answer():
    server = Server(OK + b"HTTP/1.1 200 OK\r\nx-extra: 1\r\ncontent-length: 0\r\n\r\n")
    url = await server.start()
    client = UpstreamClient()
    response = await get(client, url)
    assert response.body == b"ok" and b"x-extra" not in {k for k, _ in response.headers}
    assert (await get(client, url)).body == b"ok"
    assert server.connections == 2  # the connection out of step was not reused
    await client.close()
    await server.stop()


@run
async def test_ipv6_and_path_bearing_base_urls_and_unusable_ones():
    server = Server()
    server.server = await asyncio.start_server(server._serve, "::1", 0)
    port = server.server.sockets[0].getsockname()[1]
    client = UpstreamClient()
    assert (await get(client, f"http://[::1]:{port}/base/")).body == b"ok"
    head = server.requests[0][0]
    assert head.startswith(b"GET /base/x?y=1 HTTP/1.1\r\n")
    assert f"host: [::1]:{port}\r\n".encode() in head
    for bad in ("ftp://127.0.0.1:21", "http://127.0.0.1:99999", "http:///nohost"):
        with pytest.raises(ConnectFailed, match="unusable instance URL"):
            await get(client, bad)
    await client.close()
    await server.stop()


@run
async def test_idle_connections_are_closed_after_keepalive_without_new_requests():
    server = Server()
    url = await server.start()
    client = UpstreamClient(keepalive_s=0.1)
    await get(client, url)
    assert client._origins[url].open == 1
    await asyncio.sleep(0.3)  # no further request: the reaper closes it and forgets the origin
    assert url not in client._origins
    await client.close()
    await server.stop()


@run
async def test_a_connection_handed_to_a_waiting_request_counts_as_reused():
    """Under load a kept-alive connection goes straight from one request to the next waiting:
    if the instance closed it unanswered, that request too is sent again on a new one."""
    served = 0
    first_in = asyncio.Event()

    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await read_request(reader)
        first_in.set()
        await asyncio.sleep(0.05)  # the second request is waiting for this connection now
        served += 1
        writer.write(OK)
        await writer.drain()
        await read_request(reader)  # the next request on it: closed unanswered

    server = Server(handler=answer_once)
    url = await server.start()
    client = UpstreamClient(limit_per_origin=1)
    first = asyncio.ensure_future(get(client, url))
    await first_in.wait()
    second = await get(client, url, may_resend=True)
    assert (await first).body == b"ok" and second.body == b"ok"
    assert server.connections == 2 and served == 2
    assert client._origins[url].open == 1 and not client._origins[url].waiting
    await client.close()
    await server.stop()
