"""Wires a service's routers into a FastAPI app with the shared runtime pieces.

Lifespan owns the asyncpg pool, the Redis client and the registry heartbeat; the middleware
stack adds correlation ids, metrics and problem+json errors. Routers stay pure domain code.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from gekko import __version__
from gekko.chaos import ChaosMiddleware, effective_error_rate
from gekko.config import Settings
from gekko.correlation import CorrelationIdMiddleware
from gekko.db import create_pool
from gekko.dynconfig import build_dynamic_config, start_watcher
from gekko.health import dependency_checks, overall_status
from gekko.metrics import MetricsMiddleware, RequestMetrics, default_route_label
from gekko.outages import install_outage_handler
from gekko.problems import install_problem_handlers
from gekko.registry import RegistryHeartbeat
from gekko.security.access import authorize, route_permissions
from gekko.security.audit import AuditLog
from gekko.security.body_limit import BodyLimitMiddleware
from gekko.security.events import SecurityEvents
from gekko.security.rbac import AccessTable
from gekko.security.revocations import RevokedSessions
from gekko.security.tokens import VerifyKeys
from gekko.tracing import FASTAPI_TELEMETRY_OFF, TracingMiddleware, setup_tracing

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


# A service module may define `async def start(app)` / `async def stop(app)` for its background
# work (event consumers, price feeds); they run after the pool and Redis are ready. It may also
# define `health_details(app) -> dict`, merged into its GET /health answer.
Hook = Callable[[FastAPI], Awaitable[None]]
HealthDetails = Callable[[FastAPI], dict[str, Any]]


def _registered_ready(app: FastAPI) -> bool:
    heartbeat = app.state.heartbeat
    return heartbeat is not None and heartbeat.registered_ready


def build_service_app(
    service: str,
    settings: Settings,
    routers: Sequence[APIRouter],
    access: AccessTable,
    start: Hook | None = None,
    stop: Hook | None = None,
    health_details: HealthDetails | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await create_pool(settings.database_url)
        # Security events reach the audit log from here on.
        app.state.audit = AuditLog(app.state.pool, service, app.state.metrics_registry)
        app.state.audit.start()
        app.state.security_events.audit = app.state.audit
        app.state.redis = redis_client(settings.redis_url)
        app.state.revoked_sessions = RevokedSessions(app.state.redis)
        # Log level and feature flags from Redis, applied live (gekko.dynconfig).
        watcher = await start_watcher(app.state.redis, dynconfig, settings.dynconfig_poll_s)

        # Background work and readiness (e.g. a model warmed up) come first: an instance is
        # registered, and so receives traffic, only once it can serve.
        if start is not None:
            await start(app)

        async def probe() -> str:
            checks = await dependency_checks(app.state.pool, app.state.redis)
            return overall_status(checks)

        heartbeat = RegistryHeartbeat(
            app.state.redis, service, settings.instance_id, settings.advertise_url, probe
        )
        heartbeat.start()
        app.state.heartbeat = heartbeat
        # SIGUSR1 from the deployment drains the instance before it is stopped: it leaves the
        # registry (the gateway stops routing to it within a refresh) and fails its health check,
        # while requests in flight complete.
        app.state.draining = False

        def drain() -> None:
            if not app.state.draining:
                log.info("draining %s: leaving the registry", settings.instance_id)
                app.state.draining = True
                app.state.drain_task = asyncio.create_task(heartbeat.stop())

        app.state.drain_hooks.append(drain)  # run by `gekko serve` on SIGUSR1
        log.info(
            "service %s started as %s at %s", service, settings.instance_id, settings.advertise_url
        )
        try:
            yield
        finally:
            if stop is not None:
                await stop(app)
            await heartbeat.stop()
            await watcher.stop()
            await app.state.redis.aclose()
            await app.state.audit.stop()
            await app.state.pool.close()
            log.info("service %s stopped", service)

    app = FastAPI(
        title=f"Gekko {service}",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        telemetry=FASTAPI_TELEMETRY_OFF,  # type: ignore[arg-type]
    )
    app.state.settings = settings
    app.state.service = service
    app.state.drain_hooks = []
    app.state.heartbeat = None  # the lifespan registers the instance and sets it
    # Access tokens are verified with the published keys (re-read when a rotation replaces them).
    app.state.verify_keys = VerifyKeys(settings.jwt_verify_keys_file)
    app.state.revoked_sessions = None  # the lifespan connects Redis and sets it
    app.state.dynconfig = dynconfig = build_dynamic_config(settings)
    setup_tracing(service, settings.trace_sample_ratio)
    metrics = RequestMetrics(CollectorRegistry(), service)
    app.state.metrics_registry = metrics.registry  # services add their own collectors to it
    app.state.security_events = SecurityEvents(metrics.registry)
    install_problem_handlers(app)
    install_outage_handler(app)
    chaos_rate = effective_error_rate(settings)
    if chaos_rate > 0:
        # Inside the metrics middleware: injected 500s are counted like real ones.
        app.add_middleware(ChaosMiddleware, rate=chaos_rate)
    # Outside the routes and the chaos: an oversized body is refused before anything reads it.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics, access_log=settings.access_log)
    # Inside the correlation middleware, so log lines carry both ids.
    app.add_middleware(TracingMiddleware, route_label=default_route_label)
    app.add_middleware(CorrelationIdMiddleware)

    @app.get("/health/live", tags=["ops"])
    async def live() -> JSONResponse:
        # Alive, not ready: the process serves, whatever its datastores say. A datastore
        # outage makes /health (readiness) fail and the instance unroutable, never this.
        return JSONResponse({"status": "alive", "service": service})

    @app.get("/health", tags=["ops"])
    async def health() -> JSONResponse:
        checks = await dependency_checks(app.state.pool, app.state.redis)
        status = "draining" if app.state.draining else overall_status(checks)
        if status == "ok" and not _registered_ready(app):
            # Ready means routable: a rollout that waits for this check and then drains the
            # old instances must find the new ones already in the gateway's registry.
            status = "registering"
        body: dict[str, Any] = {
            "status": status,
            "service": service,
            "instance": settings.instance_id,
            "version": __version__,
            "checks": checks,
        }
        if health_details is not None:
            body.update(health_details(app))
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics_endpoint() -> Any:
        return metrics.render()

    # Every API route answers to its permission in the service's ACCESS table.
    routes = [route for router in routers for route in router.routes]
    app.state.permissions = route_permissions(routes, access, owner=service)
    for router in routers:
        app.include_router(router, dependencies=[Depends(authorize)])
    return app
