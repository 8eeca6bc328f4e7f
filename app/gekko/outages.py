"""A datastore that is away: how a service recognises it and what it answers meanwhile.

An outage of PostgreSQL or Redis is not the service's fault and not the caller's: the answer is
a 503 problem with `Retry-After`, which the gateway retries on another instance (when the
request may be resent) and counts against the circuit, never a 500. PostgreSQL's pooled
connections all died with the server: the first such error expires every one of them, so the
next requests connect afresh instead of each finding a dead connection in turn.
"""

from __future__ import annotations

import logging

import asyncpg
import redis.exceptions
from fastapi import FastAPI, Request
from starlette.responses import Response

from gekko.problems import problem_response

log = logging.getLogger("gekko.outages")

RETRY_AFTER_S = 1

POSTGRES_AWAY = (
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08: the connection broke
    asyncpg.CannotConnectNowError,  # starting up, shutting down, in recovery
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.InterfaceError,  # "connection is closed": the server went away mid-request
    # "cannot switch to state 15; another operation is in progress": a pooled connection the
    # server's shutdown terminated under it (seen in the chaos suite). Expiring the pool ends it.
    asyncpg.InternalClientError,
)
REDIS_AWAY = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# Refused, reset or timed out: a datastore's only when raised inside its client library (an
# exchange's or another service's timeout is not a datastore outage).
SOCKET_ERRORS = (ConnectionError, TimeoutError)


def _raised_in(exc: BaseException) -> str | None:
    tb = exc.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module.startswith("asyncpg"):
            return "postgres"
        if module.startswith("redis"):
            return "redis"
        tb = tb.tb_next
    return None


def datastore_of(exc: BaseException) -> str | None:
    """ "postgres" or "redis" when `exc` says that datastore is away, else None."""
    if isinstance(exc, REDIS_AWAY):
        return "redis"
    if isinstance(exc, POSTGRES_AWAY):
        return "postgres"
    if isinstance(exc, SOCKET_ERRORS):
        return _raised_in(exc)
    return None


def install_outage_handler(app: FastAPI) -> None:
    """Answer an escaped datastore outage with 503 + Retry-After (a problem+json body)."""

    async def handler(request: Request, exc: Exception) -> Response:
        store = datastore_of(exc)
        if store is None:
            raise exc  # not an outage: the unhandled-error path answers (and logs) it
        if store == "postgres":
            pool = getattr(request.app.state, "pool", None)
            if pool is not None:
                pool.expire_connections()
        log.warning(
            "%s is unavailable on %s %s: %s",
            store,
            request.method,
            request.url.path,
            f"{type(exc).__name__}: {exc}"[:200],
        )
        return problem_response(
            503,
            f"{store} is unavailable; retry in {RETRY_AFTER_S} s (with the same "
            "Idempotency-Key, an order is never placed twice)",
            type_="https://gekko.dev/problems/datastore-unavailable",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    for kind in (*POSTGRES_AWAY, *REDIS_AWAY, *SOCKET_ERRORS):
        app.add_exception_handler(kind, handler)
