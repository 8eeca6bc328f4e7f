"""gekko.security.body_limit: bodies over the limit never reach the application."""

import asyncio

import httpx
import pytest

from gekko.config import ConfigError, load_settings
from gekko.problems import problem_response
from gekko.security.body_limit import BodyLimitMiddleware

from .keys import TOKEN_ENV


def reading_app(seen: list[int]):
    """Reads the whole body, as a route or the gateway's proxy does, and says how much."""

    async def app(scope, receive, send):
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        seen.append(size)
        await problem_response(200, f"read {size}")(scope, receive, send)

    return app


def post(app, content) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/", content=content)

    return asyncio.run(go())


def test_a_declared_length_over_the_limit_is_refused_unread():
    seen: list[int] = []
    answer = post(BodyLimitMiddleware(reading_app(seen), max_bytes=1000), b"a" * 1001)
    assert answer.status_code == 413
    assert answer.json()["type"] == "https://gekko.dev/problems/body-too-large"
    assert seen == [], "the application never ran"


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit():
    seen: list[int] = []

    async def chunks():
        for _ in range(10):
            yield b"a" * 400

    answer = post(BodyLimitMiddleware(reading_app(seen), max_bytes=1000), chunks())
    assert answer.status_code == 413
    assert seen == [], "the application saw no complete body"


def test_a_body_within_the_limit_passes_whole():
    seen: list[int] = []
    answer = post(BodyLimitMiddleware(reading_app(seen), max_bytes=1000), b"a" * 1000)
    assert answer.status_code == 200 and seen == [1000]


def test_the_limit_is_a_positive_setting():
    env = {
        **TOKEN_ENV,
        "GEKKO_DATABASE_URL": "postgresql://u:p@127.0.0.1/db",
        "GEKKO_REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    assert load_settings("users", env).max_body_bytes == 1024 * 1024
    assert load_settings("users", {**env, "GEKKO_MAX_BODY_BYTES": "2048"}).max_body_bytes == 2048
    with pytest.raises(ConfigError, match="GEKKO_MAX_BODY_BYTES must be a positive whole number"):
        load_settings("users", {**env, "GEKKO_MAX_BODY_BYTES": "0"})
    with pytest.raises(ConfigError, match="GEKKO_LOGIN_LOCKOUT_SECONDS"):
        load_settings("users", {**env, "GEKKO_LOGIN_LOCKOUT_SECONDS": "soon"})
