"""Gateway-specific Prometheus metrics: upstreams, breakers, ejections, rate limits, instances.

Labels are services, outcomes and scopes only, never user ids or paths.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gekko.breaker import CircuitBreaker, State
from gekko.gateway.discovery import ServiceRegistryCache
from gekko.metrics import Children


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.upstream_latency = Histogram(
            "gekko_upstream_request_duration_seconds",
            "Latency of each upstream attempt, by service and outcome.",
            ["service", "outcome"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.upstream_latency_of = Children(self.upstream_latency)  # (service, outcome)
        self.retries = Counter(
            "gekko_upstream_retries_total",
            "Upstream attempts made after a first failed one, by service.",
            ["service"],
            registry=registry,
        )
        self.breaker_transitions = Counter(
            "gekko_circuit_breaker_transitions_total",
            "Circuit breaker state changes, by service and target state.",
            ["service", "from_state", "to_state"],
            registry=registry,
        )
        self.breaker_rejections = Counter(
            "gekko_circuit_breaker_rejections_total",
            "Requests answered 503 by an open circuit without calling upstream.",
            ["service"],
            registry=registry,
        )
        self.ejections = Counter(
            "gekko_outlier_ejections_total",
            "Instances ejected by outlier detection, by service.",
            ["service"],
            registry=registry,
        )
        self.ratelimit_rejections = Counter(
            "gekko_ratelimit_rejections_total",
            "Requests refused with 429, by the quota that refused them (user or service).",
            ["scope"],
            registry=registry,
        )
        self.shed = Counter(
            "gekko_gateway_shed_requests_total",
            "Requests refused with 503 by load shedding (too much in flight), by service and "
            "priority.",
            ["service", "priority"],
            registry=registry,
        )
        self.auth_rejections = Counter(
            "gekko_auth_rejections_total",
            "Requests refused with 401: a bearer token invalid, expired or of an ended session.",
            registry=registry,
        )
        self.ratelimit_errors = Counter(
            "gekko_ratelimit_storage_errors_total",
            "Rate-limit checks skipped because Redis was unavailable (requests admitted).",
            registry=registry,
        )

    def on_transition(self, service: str, old: State, new: State) -> None:
        self.breaker_transitions.labels(service, old.name.lower(), new.name.lower()).inc()


class GatewayStateCollector(Collector):
    """Gauges computed from live state at scrape time: instances, ejections, breaker states."""

    def __init__(self, cache: ServiceRegistryCache, breakers: Mapping[str, CircuitBreaker]) -> None:
        self.cache = cache
        self.breakers = breakers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        instances = GaugeMetricFamily(
            "gekko_service_instances",
            "Known service instances by state (registry health, unhealthy or ejected).",
            labels=["service", "health"],
        )
        for service, per_health in self.cache.counts().items():
            for health in sorted(set(per_health) | {"ok"}):
                instances.add_metric([service, health], per_health.get(health, 0))
        yield instances

        ejected = GaugeMetricFamily(
            "gekko_instances_ejected",
            "Instances currently ejected by outlier detection.",
            labels=["service"],
        )
        for service, per in self.cache.counts().items():
            ejected.add_metric([service], per.get("ejected", 0))
        yield ejected

        state = GaugeMetricFamily(
            "gekko_circuit_breaker_state",
            "Circuit breaker state per upstream service: 0 closed, 1 half-open, 2 open.",
            labels=["service"],
        )
        for service, breaker in self.breakers.items():
            state.add_metric([service], breaker_gauge_value(breaker))
        yield state


# Ordered by severity, so `>= 1` is "not closed" and `== 2` is "refusing calls".
_GAUGE_VALUES = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}


def breaker_gauge_value(breaker: CircuitBreaker) -> int:
    """The state as the gauge encodes it. An open breaker whose `open_s` has passed lets the
    next call through as a probe (it only moves on that call), so it reads half-open: without
    traffic the gauge would otherwise say open for ever after the upstream recovered."""
    if breaker.probe_due():
        return _GAUGE_VALUES[State.HALF_OPEN]
    return _GAUGE_VALUES[breaker.state]
