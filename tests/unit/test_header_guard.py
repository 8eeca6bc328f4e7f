"""Slow and oversized request headers against a real uvicorn server with the guarded protocol:
cut off with 408 or 431 (problem+json) and the connection closed; normal and keep-alive
requests unaffected."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from gekko.security.header_guard import guarded_protocol

TIMEOUT_S = 0.6
MAX_HEADER_BYTES = 2048


async def ok_app(scope, receive, send):
    if scope["type"] != "http":
        return
    headers = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        ok_app,
        http=guarded_protocol(TIMEOUT_S, MAX_HEADER_BYTES),
        log_config=None,
        lifespan="off",
        timeout_keep_alive=30,
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield "127.0.0.1", port
    srv.should_exit = True
    thread.join(timeout=5)
    sock.close()


def read_all(sock: socket.socket, limit_s: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(limit_s)
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


def one_answer(sock: socket.socket) -> bytes:
    """One whole 200 answer of ok_app on a kept-alive connection."""
    sock.settimeout(5)
    answer = b""
    while not answer.endswith(b"\r\n\r\nok"):
        chunk = sock.recv(1000)
        assert chunk, answer
        answer += chunk
    return answer


def problem(answer: bytes) -> dict:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head, head
    assert b"connection: close" in head, head
    return json.loads(body)


def test_a_normal_request_and_a_keep_alive_one_after_it_are_served(server):
    with socket.create_connection(server) as sock:
        for _ in range(2):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert one_answer(sock).startswith(b"HTTP/1.1 200 OK")
        # Idle between requests longer than the header deadline: keep-alive is not cut by it.
        time.sleep(TIMEOUT_S * 1.5)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert one_answer(sock).startswith(b"HTTP/1.1 200 OK")


def test_headers_dribbled_slower_than_the_deadline_get_408_and_the_connection_closes(server):
    started = time.monotonic()
    with socket.create_connection(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        # Bytes keep arriving, but the headers never complete (slowloris).
        for _ in range(4):
            time.sleep(TIMEOUT_S / 3)
            with contextlib.suppress(OSError):
                sock.sendall(b"X-a: b\r\n")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert problem(answer)["type"].endswith("/problems/request-timeout")
    assert time.monotonic() - started < TIMEOUT_S + 3


def test_a_connection_that_sends_nothing_is_closed_at_the_deadline(server):
    with socket.create_connection(server) as sock:
        assert read_all(sock) == b""


def test_oversized_headers_get_431_before_the_app_runs(server):
    with socket.create_connection(server) as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n"
        )
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer
    body = problem(answer)
    assert body["status"] == 431 and body["type"].endswith("/problems/headers-too-large")
    assert str(MAX_HEADER_BYTES) in body["detail"]


def test_many_small_headers_add_up_to_the_limit(server):
    headers = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 40) for i in range(60))
    with socket.create_connection(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 431 ")


def test_an_oversized_request_line_counts_too(server):
    with socket.create_connection(server) as sock:
        sock.sendall(b"GET /" + b"p" * MAX_HEADER_BYTES + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 431 ")


def test_other_malformed_requests_still_get_uvicorns_400(server):
    with socket.create_connection(server) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 400 ")
