"""Prometheus request metrics as plain ASGI middleware, one CollectorRegistry per app.

Labels are low-cardinality on purpose: a route *prefix* (never a path with ids in it),
the method and the status class.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as _generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gekko.config import API_ROUTES

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Route prefixes of the public API (gekko.config.API_ROUTES maps them to services).
API_PREFIXES = frozenset(API_ROUTES)

log = logging.getLogger("gekko.http")


class Children:
    """A metric's labelled children, looked up once: prometheus_client's `labels()` validates
    the values and takes a lock on every call, a measurable share of a proxied request. Only
    for low-cardinality labels (every combination is kept)."""

    def __init__(self, metric: Counter | Histogram) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class RequestMetrics:
    def __init__(self, registry: CollectorRegistry, component: str) -> None:
        self.registry = registry
        self.requests = Counter(
            "gekko_http_requests_total",
            "HTTP requests handled, by route prefix, method and status class.",
            ["component", "route", "method", "status_class"],
            registry=registry,
        )
        self.duration = Histogram(
            "gekko_http_request_duration_seconds",
            "HTTP request latency, by route prefix and method.",
            ["component", "route", "method"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.component = component
        self._requests = Children(self.requests)
        self._duration = Children(self.duration)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in KNOWN_METHODS else "OTHER"
        status_class = f"{status // 100}xx" if 100 <= status < 600 else "unknown"
        self._requests(self.component, route, method, status_class).inc()
        self._duration(self.component, route, method).observe(seconds)

    def render(self) -> Response:
        return Response(_generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def default_route_label(path: str) -> str:
    """`/api/v1/<prefix>/...` -> `<prefix>`; fixed endpoints keep their name; all else 'other'."""
    if path.startswith("/api/v1/"):
        prefix = path[len("/api/v1/") :].split("/", 1)[0]
        return prefix if prefix in API_PREFIXES else "unknown"
    if path == "/health/live":
        return "health"
    if path in ("/health", "/services", "/metrics", "/config", "/openapi.json", "/docs"):
        return path.lstrip("/")
    return "other"


# Routes (default_route_label's names) the access log leaves out.
QUIET_ROUTES = frozenset({"health", "metrics"})


class MetricsMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        metrics: RequestMetrics,
        route_label: Callable[[str], str] = default_route_label,
        access_log: bool = False,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.route_label = route_label
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            elapsed = time.perf_counter() - started
            path, method = scope.get("path", ""), scope.get("method", "GET")
            route = self.route_label(path)
            self.metrics.observe(route, method, status, elapsed)
            # Probes and scrapes are counted, not logged: they would drown the requests. With
            # the access log off, a request still leaves a line at log_level DEBUG.
            level = logging.INFO if self.access_log else logging.DEBUG
            if route not in QUIET_ROUTES and log.isEnabledFor(level):
                fields = {"method": method, "path": path, "status": status}
                fields["duration_ms"] = round(elapsed * 1000, 2)
                log.log(
                    level,
                    "%s %s -> %d in %.1f ms",
                    method,
                    path,
                    status,
                    elapsed * 1000,
                    extra={"fields": fields},
                )
