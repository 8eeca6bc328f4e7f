"""Security events (login failures, lockouts, logouts, refresh token reuse ...): each one is a
log line and a count in `gekko_security_events_total{event}`, so an alert can watch them."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger("gekko.security")


class SecurityEvents:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._counter = Counter(
            "gekko_security_events_total",
            "Security events (login failures, lockouts, refresh token reuse, logouts ...).",
            ["event"],
            registry=registry,
        )

    def record(self, event: str, **fields: object) -> None:
        self._counter.labels(event).inc()
        details = " ".join(f"{name}={value}" for name, value in fields.items())
        log.warning("security event %s %s", event, details, extra={"security_event": event})
