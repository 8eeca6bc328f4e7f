"""A datastore that is away answers 503 with Retry-After, never 500 (gekko.outages)."""

import asyncpg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from redis.asyncio import Redis

from gekko.outages import datastore_of, install_outage_handler
from gekko.problems import install_problem_handlers

CLOSED = 9  # the discard port on loopback: nothing listens, the connection is refused


class Pool:
    expired = 0

    def expire_connections(self) -> None:
        self.expired += 1


@pytest.fixture
def client():
    app = FastAPI()
    install_problem_handlers(app)
    install_outage_handler(app)
    app.state.pool = Pool()

    @app.get("/postgres-refused")
    async def postgres_refused() -> None:
        await asyncpg.connect(host="127.0.0.1", port=CLOSED, user="x", password="x", timeout=2)

    @app.get("/postgres-went-away")
    async def postgres_went_away() -> None:
        raise asyncpg.ConnectionDoesNotExistError(
            "connection was closed in the middle of operation"
        )

    @app.get("/postgres-starting")
    async def postgres_starting() -> None:
        raise asyncpg.CannotConnectNowError("the database system is starting up")

    @app.get("/postgres-connection-broken-under-it")
    async def postgres_connection_broken() -> None:
        raise asyncpg.InternalClientError(
            "cannot switch to state 15; another operation (2) is in progress"
        )

    @app.get("/redis-refused")
    async def redis_refused() -> None:
        client = Redis(host="127.0.0.1", port=CLOSED, socket_connect_timeout=2)
        try:
            await client.ping()
        finally:
            await client.aclose()

    @app.get("/not-a-datastore")
    async def not_a_datastore() -> None:
        raise ConnectionRefusedError("an exchange refused the connection")

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize(
    ("path", "store", "expires_pool"),
    [
        ("/postgres-refused", "postgres", True),
        ("/postgres-went-away", "postgres", True),
        ("/postgres-starting", "postgres", True),
        ("/postgres-connection-broken-under-it", "postgres", True),
        ("/redis-refused", "redis", False),
    ],
)
def test_a_datastore_away_is_a_503_to_retry(client, path, store, expires_pool):
    answer = client.get(path)
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["type"] == "https://gekko.dev/problems/datastore-unavailable"
    assert body["detail"].startswith(f"{store} is unavailable; retry in 1 s")
    # Every pooled connection died with the server: all are replaced, not found dead one by one.
    assert (client.app.state.pool.expired > 0) is expires_pool


def test_a_refused_connection_elsewhere_is_not_called_a_datastore_outage(client):
    answer = client.get("/not-a-datastore")
    assert answer.status_code == 500
    assert "unavailable" not in answer.text
    assert datastore_of(ConnectionRefusedError()) is None
    assert datastore_of(TimeoutError()) is None
    assert datastore_of(ValueError()) is None
