"""The gateway app: discovery, proxy, health, registry view and metrics wired in one place."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from starlette.responses import Response

from gekko import __version__
from gekko.config import DOMAIN_SERVICES, GATEWAY, UPSTREAM_KEEPALIVE_S, Settings
from gekko.correlation import CorrelationIdMiddleware
from gekko.db import create_pool
from gekko.dynconfig import build_dynamic_config, start_watcher
from gekko.gateway.dashboard import install_dashboard
from gekko.gateway.discovery import RedisDiscovery, ServiceRegistryCache
from gekko.gateway.healthcheck import ActiveHealthChecker
from gekko.gateway.openapi import OpenApiAggregator
from gekko.gateway.outlier import EjectionPolicy, HealthCheckPolicy
from gekko.gateway.proxy import ApiProxy, Upstreams
from gekko.gateway.telemetry import GatewayMetrics, GatewayStateCollector
from gekko.gateway.upstream import UpstreamClient
from gekko.health import dependency_checks
from gekko.metrics import MetricsMiddleware, RequestMetrics, default_route_label
from gekko.problems import install_problem_handlers
from gekko.ratelimit import Quota, RateLimiter
from gekko.security.access import authorize, route_permissions
from gekko.security.audit import AuditLog
from gekko.security.body_limit import BodyLimitMiddleware
from gekko.security.events import SecurityEvents
from gekko.security.hsts import HstsMiddleware
from gekko.security.rbac import OPERATE_READ, PUBLIC, AccessTable
from gekko.security.revocations import RevokedSessions
from gekko.security.tokens import VerifyKeys
from gekko.services.base import redis_client
from gekko.tls import client_context
from gekko.tracing import FASTAPI_TELEMETRY_OFF, TracingMiddleware, setup_tracing

log = logging.getLogger("gekko.gateway")


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


# Who may call the gateway's own routes (gekko.security.rbac); /api/v1 is checked by the
# services, each with its own table. A route missing here stops the gateway.
GATEWAY_ACCESS: AccessTable = {
    ("GET", "/health"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/dashboard"): PUBLIC,  # the page shell; it signs in for the figures
    ("GET", "/dashboard/kpis"): OPERATE_READ,
    ("GET", "/dashboard/metrics"): OPERATE_READ,
    ("GET", "/services"): OPERATE_READ,
    ("GET", "/config"): OPERATE_READ,
}


def build_gateway_app(settings: Settings) -> FastAPI:
    tuning = settings.gateway
    cache = ServiceRegistryCache(
        DOMAIN_SERVICES,
        settings.static_services,
        ejection=EjectionPolicy(
            consecutive=tuning.ejection_consecutive,
            base_s=tuning.ejection_base_s,
            max_s=tuning.ejection_max_s,
        ),
    )
    registry = CollectorRegistry()
    metrics = RequestMetrics(registry, "gateway")
    upstreams = Upstreams(
        cache, tuning, GatewayMetrics(registry), VerifyKeys(settings.jwt_verify_keys_file)
    )
    for service in DOMAIN_SERVICES:
        upstreams.breaker(service)  # every breaker visible from the first scrape
    registry.register(GatewayStateCollector(cache, upstreams.breakers))
    setup_tracing("gateway", settings.trace_sample_ratio)

    def apply_rate_limits(changes: dict[str, Any]) -> None:
        limiter = upstreams.limiter
        if limiter is None or not changes.keys() & {
            "ratelimit_user_per_window",
            "ratelimit_service_per_window",
            "ratelimit_anonymous_per_window",
        }:
            return
        window = tuning.ratelimit_window_s
        limiter.set_quotas(
            Quota(dynconfig.get("ratelimit_user_per_window"), window),
            Quota(dynconfig.get("ratelimit_service_per_window"), window),
            Quota(dynconfig.get("ratelimit_anonymous_per_window"), window),
        )

    # Log level, rate-limit quotas and feature flags from Redis, applied live.
    dynconfig = build_dynamic_config(settings, apply_rate_limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # With the internal CA configured, upstreams (https:// URLs) are verified against it.
        upstream_tls = client_context(settings.tls) if settings.tls is not None else None
        # Proxied requests go through the proxy's own pooled client (gekko.gateway.upstream);
        # its idle connections are closed here before an instance would close them.
        upstreams.client = UpstreamClient(
            ssl_context=upstream_tls,
            keepalive_s=UPSTREAM_KEEPALIVE_S,
            connect_timeout_s=1.0,
            limit_per_origin=256,
        )
        # Health checks and the API documents: one long-lived aiohttp session.
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit_per_host=8,
                keepalive_timeout=UPSTREAM_KEEPALIVE_S,
                ttl_dns_cache=300,
                ssl=upstream_tls or True,
            ),
            timeout=aiohttp.ClientTimeout(
                total=tuning.upstream_timeout_s, connect=1, sock_connect=1
            ),
            skip_auto_headers=("User-Agent",),
            cookie_jar=aiohttp.DummyCookieJar(),  # nothing an instance sets is sent back
        )
        app.state.session = session
        if tuning.ratelimit_enabled:
            upstreams.limiter = RateLimiter(
                settings.redis_url,
                Quota(tuning.ratelimit_user_per_window, tuning.ratelimit_window_s),
                Quota(tuning.ratelimit_service_per_window, tuning.ratelimit_window_s),
                anonymous=Quota(tuning.ratelimit_anonymous_per_window, tuning.ratelimit_window_s),
                on_error=upstreams.metrics.ratelimit_errors.inc,
            )
            apply_rate_limits(dynconfig.effective)  # overrides already read stay in force
        app.state.redis = redis_client(settings.redis_url)
        app.state.revoked_sessions = upstreams.revoked = RevokedSessions(app.state.redis)
        app.state.pool = await create_pool(settings.database_url, max_size=2)
        # Refused tokens and calls reach the audit log (written in the background; queued
        # while PostgreSQL is away, so the gateway never waits for it).
        audit = AuditLog(app.state.pool, GATEWAY, registry)
        audit.start()
        app.state.security_events.audit = audit
        watcher = await start_watcher(app.state.redis, dynconfig, settings.dynconfig_poll_s)
        discovery = RedisDiscovery(app.state.redis, cache, tuning.discovery_interval_s)
        try:
            await discovery.refresh_once()  # route from the first request if Redis is up
        except Exception as exc:
            log.warning("initial registry read failed: %s", exc)
            cache.mark_redis_down()
        discovery.start()
        checker = ActiveHealthChecker(
            session,
            cache,
            HealthCheckPolicy(
                interval_s=tuning.health_check_interval_s,
                recovery_interval_s=tuning.health_check_recovery_interval_s,
                timeout_s=tuning.health_check_timeout_s,
                unhealthy_threshold=tuning.unhealthy_threshold,
                healthy_threshold=tuning.healthy_threshold,
            ),
            on_ready=upstreams.ready_again,
            urgent=upstreams.any_circuit_open,
        )
        upstreams.on_circuit_open = checker.wake
        checker.start()
        aggregator = OpenApiAggregator(session, cache, own_openapi, tuning.openapi_refresh_s)
        app.state.openapi_aggregator = aggregator
        aggregator.start()
        log.info("gateway %s listening on %s", settings.instance_id, settings.advertise_url)
        try:
            yield
        finally:
            await aggregator.stop()
            await checker.stop()
            await discovery.stop()
            await watcher.stop()
            if upstreams.limiter is not None:
                await upstreams.limiter.close()
            await upstreams.client.close()
            await session.close()
            await app.state.redis.aclose()
            await audit.stop()
            await app.state.pool.close()

    app = FastAPI(
        title="Gekko API gateway",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        telemetry=FASTAPI_TELEMETRY_OFF,  # type: ignore[arg-type]
    )
    app.state.settings = settings
    app.state.cache = cache
    app.state.upstreams = upstreams
    app.state.metrics_registry = registry
    app.state.dynconfig = dynconfig
    # The gateway's own routes answer to GATEWAY_ACCESS, with the keys the proxy verifies with.
    app.state.verify_keys = upstreams.verify_keys
    app.state.revoked_sessions = None  # set once Redis is connected (lifespan)
    # Access denied by the gateway itself (its own routes, tokens refused at the edge).
    app.state.security_events = upstreams.security_events = SecurityEvents(registry)
    # Middleware, innermost first: /api/v1 is proxied before FastAPI routing; errors become
    # problems; then metrics, the request's SERVER span, and the correlation id outermost.
    app.add_middleware(ApiProxy, upstreams=upstreams)
    # Around the proxy, inside the problems' catch-all: an oversized body is refused with 413
    # before it is forwarded, and never reaches a service.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    install_problem_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics, access_log=settings.access_log)
    app.add_middleware(TracingMiddleware, route_label=default_route_label)
    app.add_middleware(CorrelationIdMiddleware)
    if settings.edge_tls is not None:
        app.add_middleware(HstsMiddleware, max_age_s=settings.edge_tls.hsts_max_age_s)
    # The KPI series get a registry of their own: /dashboard/metrics, not the public /metrics.
    install_dashboard(app, CollectorRegistry(), settings.kpi_scrape_token_sha256)

    def own_openapi() -> dict[str, Any]:
        return get_openapi(
            title=app.title,
            version=app.version,
            description="Gekko trading platform: the gateway's operations endpoints and every "
            "domain service's API under /api/v1.",
            routes=app.routes,
        )

    def openapi() -> dict[str, Any]:
        aggregator = getattr(app.state, "openapi_aggregator", None)
        return aggregator.document() if aggregator is not None else own_openapi()

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/health", tags=["ops"], dependencies=[Depends(authorize)])
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

    @app.get("/services", tags=["ops"], dependencies=[Depends(authorize)])
    async def services() -> dict[str, Any]:
        """Every instance with the gateway's view of it, and each service's circuit breaker."""
        return {
            "services": cache.snapshot(),
            "circuit_breakers": {s: b.as_dict() for s, b in upstreams.breakers.items()},
            "registry": "redis" if cache.redis_ok else "static",
        }

    @app.get("/config", tags=["ops"], dependencies=[Depends(authorize)])
    async def config_view() -> dict[str, Any]:
        """The dynamic configuration in force: each setting's value and whether Redis or the
        environment set it (Redis hash `gekko:config`, see gekko.dynconfig). Read-only."""
        return dynconfig.snapshot()

    @app.get("/metrics", tags=["ops"], response_class=Response, dependencies=[Depends(authorize)])
    async def metrics_endpoint() -> Response:
        """Prometheus exposition: requests, upstreams, breakers, ejections, rate limits."""
        return metrics.render()

    app.state.permissions = route_permissions(app.routes, GATEWAY_ACCESS, owner="gateway")
    return app
