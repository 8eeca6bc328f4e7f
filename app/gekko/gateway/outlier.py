"""Per-instance health as the gateway sees it: active health checks and outlier ejection.

Envoy semantics. Active: `unhealthy_threshold` failed `GET /health` in a row mark an instance
unhealthy, `healthy_threshold` passes in a row mark it healthy again. Passive (outlier
ejection): `consecutive` 5xx/connect errors/timeouts in a row eject it for
`base_s` x times ejected (capped at `max_s`), but never more than `max_fraction` of a
service's instances at once. All pure state; the clock is the caller's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class HostState:
    healthy: bool = True  # trust the registry until active checks say otherwise
    check_failures: int = 0
    check_successes: int = 0
    consecutive_failures: int = 0  # passive: 5xx, connect errors, timeouts
    times_ejected: int = 0
    ejected_until: float = 0.0

    def ejected(self, now: float) -> bool:
        return self.ejected_until > now

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "active_health": "healthy" if self.healthy else "unhealthy",
            "ejected": self.ejected(now),
            "ejected_until": self.ejected_until if self.ejected(now) else None,
            "times_ejected": self.times_ejected,
            "consecutive_failures": self.consecutive_failures,
        }


@dataclass(frozen=True)
class HealthCheckPolicy:
    interval_s: float = 5.0
    recovery_interval_s: float = 1.0  # while an instance fails or a circuit is open
    timeout_s: float = 1.0
    unhealthy_threshold: int = 3
    healthy_threshold: int = 2

    def apply(self, host: HostState, passed: bool) -> bool | None:
        """Record one check; returns the new `healthy` value when it flips, else None."""
        if passed:
            host.check_failures = 0
            host.check_successes += 1
            if not host.healthy and host.check_successes >= self.healthy_threshold:
                host.healthy = True
                return True
        else:
            host.check_successes = 0
            host.check_failures += 1
            if host.healthy and host.check_failures >= self.unhealthy_threshold:
                host.healthy = False
                return False
        return None


@dataclass(frozen=True)
class EjectionPolicy:
    consecutive: int = 5
    base_s: float = 30.0
    max_s: float = 300.0
    max_fraction: float = 0.5

    def duration(self, times_ejected: int) -> float:
        return min(self.base_s * times_ejected, self.max_s)

    def record(self, host: HostState, peers: Sequence[HostState], failed: bool, now: float) -> bool:
        """Record one upstream outcome for `host` (one of `peers`); True if it was just ejected."""
        if not failed:
            host.consecutive_failures = 0
            return False
        host.consecutive_failures += 1
        if host.consecutive_failures < self.consecutive or host.ejected(now):
            return False
        ejected = sum(1 for p in peers if p.ejected(now))
        if ejected + 1 > int(len(peers) * self.max_fraction):
            return False  # would eject more than allowed: keep it and keep counting
        host.times_ejected += 1
        host.ejected_until = now + self.duration(host.times_ejected)
        host.consecutive_failures = 0
        return True
