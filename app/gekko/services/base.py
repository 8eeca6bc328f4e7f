"""Wires a domain router into a FastAPI app with the shared runtime pieces.

Lifespan owns the asyncpg pool, the Redis client and the registry heartbeat; the middleware
stack adds correlation ids, metrics and problem+json errors. Routers stay pure domain code.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from gekko import __version__
from gekko.config import Settings
from gekko.correlation import CorrelationIdMiddleware
from gekko.db import create_pool
from gekko.health import dependency_checks, overall_status
from gekko.metrics import MetricsMiddleware, RequestMetrics
from gekko.problems import install_problem_handlers
from gekko.registry import RegistryHeartbeat

log = logging.getLogger("gekko.service")


def redis_client(url: str) -> Redis:
    # Short timeouts: a stalled Redis must not stall request handling or shutdown.
    return Redis.from_url(
        url,
        socket_timeout=2,
        socket_connect_timeout=2,
        health_check_interval=30,
        decode_responses=False,
    )


def build_service_app(service: str, settings: Settings, router: APIRouter) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await create_pool(settings.database_url)
        app.state.redis = redis_client(settings.redis_url)

        async def probe() -> str:
            checks = await dependency_checks(app.state.pool, app.state.redis)
            return overall_status(checks)

        heartbeat = RegistryHeartbeat(
            app.state.redis, service, settings.instance_id, settings.advertise_url, probe
        )
        heartbeat.start()
        log.info(
            "service %s started as %s at %s", service, settings.instance_id, settings.advertise_url
        )
        try:
            yield
        finally:
            await heartbeat.stop()
            await app.state.redis.aclose()
            await app.state.pool.close()
            log.info("service %s stopped", service)

    app = FastAPI(
        title=f"Gekko {service}",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.service = service
    metrics = RequestMetrics(CollectorRegistry(), service)
    install_problem_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(CorrelationIdMiddleware)

    @app.get("/health", tags=["ops"])
    async def health() -> JSONResponse:
        checks = await dependency_checks(app.state.pool, app.state.redis)
        status = overall_status(checks)
        body: dict[str, Any] = {
            "status": status,
            "service": service,
            "instance": settings.instance_id,
            "version": __version__,
            "checks": checks,
        }
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics_endpoint() -> Any:
        return metrics.render()

    app.include_router(router)
    return app
