"""The gateway app: discovery, proxy, health, registry view and metrics wired in one place."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.responses import Response

from gekko import __version__
from gekko.config import DOMAIN_SERVICES, Settings
from gekko.correlation import CorrelationIdMiddleware
from gekko.db import create_pool
from gekko.gateway.discovery import RedisDiscovery, ServiceRegistryCache
from gekko.gateway.proxy import ROUTES, forward
from gekko.health import dependency_checks
from gekko.metrics import MetricsMiddleware, RequestMetrics
from gekko.problems import ProblemError, install_problem_handlers
from gekko.services.base import redis_client

log = logging.getLogger("gekko.gateway")

PROXY_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class InstanceGauge(Collector):
    """gekko_service_instances{service,health}, computed from the cache at scrape time."""

    def __init__(self, cache: ServiceRegistryCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "gekko_service_instances",
            "Known service instances by health, as seen by the gateway.",
            labels=["service", "health"],
        )
        for service, per_health in self.cache.counts().items():
            for health in sorted(set(per_health) | {"ok"}):
                gauge.add_metric([service, health], per_health.get(health, 0))
        yield gauge


def service_status(cache: ServiceRegistryCache, service: str) -> dict[str, Any]:
    healthy = len(cache.healthy_dynamic(service))
    static = len(cache.static(service))
    if healthy:
        status = "ok"
    elif static:
        status = "static"  # routable via GEKKO_STATIC_SERVICES, health unverified
    else:
        status = "down"
    return {"status": status, "healthy_instances": healthy, "static_instances": static}


def build_gateway_app(settings: Settings) -> FastAPI:
    cache = ServiceRegistryCache(DOMAIN_SERVICES, settings.static_services)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One long-lived session: pooled keep-alive connections to every upstream.
        connector = aiohttp.TCPConnector(
            limit=512, limit_per_host=128, keepalive_timeout=30, ttl_dns_cache=300
        )
        app.state.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=5, connect=1, sock_connect=1),
            auto_decompress=False,  # pass bodies through byte for byte
            skip_auto_headers=("User-Agent",),
        )
        app.state.redis = redis_client(settings.redis_url)
        app.state.pool = await create_pool(settings.database_url, max_size=2)
        discovery = RedisDiscovery(app.state.redis, cache)
        try:
            await discovery.refresh_once()  # route from the first request if Redis is up
        except Exception as exc:
            log.warning("initial registry read failed: %s", exc)
            cache.mark_redis_down()
        discovery.start()
        log.info("gateway %s listening on %s", settings.instance_id, settings.advertise_url)
        try:
            yield
        finally:
            await discovery.stop()
            await app.state.session.close()
            await app.state.redis.aclose()
            await app.state.pool.close()

    app = FastAPI(
        title="Gekko API gateway",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.cache = cache
    registry = CollectorRegistry()
    registry.register(InstanceGauge(cache))
    metrics = RequestMetrics(registry, "gateway")
    install_problem_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(CorrelationIdMiddleware)

    @app.get("/health", tags=["ops"])
    async def health() -> JSONResponse:
        checks: dict[str, Any] = await dependency_checks(app.state.pool, app.state.redis)
        services = {s: service_status(cache, s) for s in DOMAIN_SERVICES}
        checks["services"] = services
        deps_down = [n for n in ("redis", "postgres") if checks[n]["status"] != "ok"]
        services_down = [s for s, v in services.items() if v["status"] == "down"]
        if not deps_down and not services_down:
            status = "ok"
        elif len(deps_down) == 2 or len(services_down) == len(DOMAIN_SERVICES):
            status = "down"
        else:
            status = "degraded"
        body = {
            "status": status,
            "service": "gateway",
            "instance": settings.instance_id,
            "version": __version__,
            "checks": checks,
        }
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    @app.get("/services", tags=["ops"])
    async def services() -> dict[str, Any]:
        return {
            "services": cache.snapshot(),
            "registry": "redis" if cache.redis_ok else "static",
        }

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return metrics.render()

    async def proxy(request: Request) -> Response:
        prefix = request.path_params["prefix"]
        service = ROUTES.get(prefix)
        if service is None:
            raise ProblemError(
                404,
                f"no API is served under /api/v1/{prefix}; known: {', '.join(ROUTES)}",
                slug="unknown-route",
            )
        return await forward(app.state.session, cache, service, request)

    app.add_api_route("/api/v1/{prefix}", proxy, methods=PROXY_METHODS, include_in_schema=False)
    app.add_api_route(
        "/api/v1/{prefix}/{path:path}", proxy, methods=PROXY_METHODS, include_in_schema=False
    )
    return app
