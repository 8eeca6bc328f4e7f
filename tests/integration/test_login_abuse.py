"""Password guessing, oversized bodies and headers, against the real services, Redis and PostgreSQL.

Per-source lockouts are keyed on the address the gateway saw, which it appends to
X-Forwarded-For. Every request of this suite reaches the gateway from 127.0.0.1, so the tests
that lock a source call the users service directly with the header the gateway would send, from
a documentation address (RFC 5737) of their own, and leave 127.0.0.1 unlocked for the others.
"""

import asyncio
import json
import secrets
import socket
import time

import httpx
import pytest
from redis.asyncio import Redis

from gekko.problems import PROBLEM_MEDIA_TYPE as PROBLEM
from gekko.security.lockout import LockoutPolicy, LoginGuard

from .conftest import LOOPBACK, new_user


def users_url(stack) -> str:
    return f"http://{LOOPBACK}:{stack.ports['users']}/api/v1/users/login"


def login(stack, username: str, password: str, source: str) -> httpx.Response:
    return httpx.post(
        users_url(stack),
        json={"username": username, "password": password},
        headers={"X-Forwarded-For": f"198.51.100.99, {source}"},
        timeout=10,
    )


def registered(stack) -> tuple[str, str]:
    name = f"g{secrets.token_hex(6)}"
    password = "correct-horse"
    created = httpx.post(
        f"{stack.gateway}/api/v1/users/register",
        json={"username": name, "email": f"{name}@example.com", "password": password},
    )
    assert created.status_code == 201, created.text
    return name, password


def security_events(stack) -> dict[str, float]:
    text = httpx.get(f"http://{LOOPBACK}:{stack.ports['users']}/metrics").text
    events = {}
    for line in text.splitlines():
        if line.startswith("gekko_security_events_total{"):
            labels, value = line.rsplit(" ", 1)
            events[labels.split('event="', 1)[1].split('"', 1)[0]] = float(value)
    return events


def test_five_wrong_passwords_lock_the_account_even_for_the_right_one(stack):
    name, password = registered(stack)
    before = security_events(stack).get("lockout", 0)
    for _ in range(4):
        assert login(stack, name, "wrong-guess", "192.0.2.10").status_code == 401
    locked = login(stack, name, "wrong-guess", "192.0.2.10")
    assert locked.status_code == 423, locked.text
    assert locked.headers["content-type"].startswith(PROBLEM)
    assert locked.json()["type"].endswith("/account-locked")
    assert int(locked.headers["Retry-After"]) == 900

    # The right password, even from another address, is refused while the lock lasts.
    right = login(stack, name, password, "192.0.2.11")
    assert right.status_code == 423 and 0 < int(right.headers["Retry-After"]) <= 900
    assert "access_token" not in right.text
    # Through the gateway too, and other accounts are not affected.
    through = httpx.post(
        f"{stack.gateway}/api/v1/users/login", json={"username": name, "password": password}
    )
    assert through.status_code == 423
    new_user(stack.gateway)
    assert security_events(stack)["lockout"] == before + 1


def test_a_success_before_the_threshold_clears_the_count(stack):
    name, password = registered(stack)
    for _ in range(4):
        assert login(stack, name, "wrong-guess", "192.0.2.20").status_code == 401
    assert login(stack, name, password, "192.0.2.20").status_code == 200
    for _ in range(4):
        assert login(stack, name, "wrong-guess", "192.0.2.20").status_code == 401
    assert login(stack, name, password, "192.0.2.20").status_code == 200


def test_guessing_across_accounts_locks_the_source_address(stack):
    name, password = registered(stack)
    source = "192.0.2.30"
    answers = [login(stack, f"nobody-{i}", "wrong-guess", source).status_code for i in range(20)]
    assert answers[:19] == [401] * 19 and answers[19] == 429, answers
    refused = login(stack, name, password, source)
    assert refused.status_code == 429
    assert refused.json()["type"].endswith("/source-locked")
    assert int(refused.headers["Retry-After"]) > 0
    # The same account from another address logs in: the lock is the source's.
    assert login(stack, name, password, "192.0.2.31").status_code == 200


def test_each_further_lockout_doubles(redis_server):
    async def scenario() -> list[int]:
        redis = Redis.from_url(redis_server.url)
        guard = LoginGuard(redis, LockoutPolicy(max_failures=2, lockout_s=1, max_lockout_s=3))
        account = f"backoff-{secrets.token_hex(4)}"
        seen = []
        try:
            for _ in range(3):
                assert await guard.failed(account, "192.0.2.40") is None
                lock = await guard.failed(account, "192.0.2.40")
                seen.append(lock.retry_after_s)
                assert (await guard.lock(account, "192.0.2.41")).scope == "account"
                await asyncio.sleep(lock.retry_after_s + 0.2)
                assert await guard.lock(account, "192.0.2.41") is None
        finally:
            await redis.aclose()
        return seen

    started = time.monotonic()
    assert asyncio.run(scenario()) == [1, 2, 3]  # doubled, then capped at max_lockout_s
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("target", ["gateway", "users"])
def test_a_body_over_one_mib_is_refused_before_it_is_read(stack, target):
    url = (
        f"{stack.gateway}/api/v1/users/register"
        if target == "gateway"
        else f"http://{LOOPBACK}:{stack.ports['users']}/api/v1/users/register"
    )
    big = b'{"username": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    declared = httpx.post(url, content=big, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413, declared.text
    assert declared.headers["content-type"].startswith(PROBLEM)
    assert declared.json()["type"].endswith("/body-too-large")

    def chunks():
        for _ in range(40):
            yield b"a" * 65536  # 2.5 MiB without a Content-Length

    chunked = httpx.post(url, content=chunks(), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413, chunked.text
    # A body under the limit is served as before.
    small = httpx.post(url, json={"username": "x"})
    assert small.status_code == 422


@pytest.mark.parametrize("target", ["gateway", "users"])
def test_oversized_headers_are_refused_and_the_connection_closed(stack, target):
    """Every `gekko serve` process cuts off oversized headers (the protocol is unit-tested with
    slow ones too: tests/unit/test_header_guard.py)."""
    port = stack.ports[target]
    big = b"X-Filler: " + b"a" * (40 * 1024) + b"\r\n"
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), answer[:300]
    assert b"connection: close" in head
    assert json.loads(body)["type"].endswith("/problems/headers-too-large")
    # Headers of a normal size are served as before.
    assert httpx.get(
        f"http://{LOOPBACK}:{port}/health", headers={"X-Filler": "a" * 4096}
    ).is_success
