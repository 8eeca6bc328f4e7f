"""Load shedding by priority (EC-PERF-002): when the gateway has too much in flight, what can
wait is refused first, so orders keep being served.

The signal is the number of proxied requests in flight in this gateway process: under
overload (a spike, a slow upstream, a busy core) it grows while throughput does not. Each
request has a priority; each priority but the highest has a ceiling of requests in flight above
which its requests are refused at once with 503 and `Retry-After`, before they cost a token
check, a quota or an upstream call:

    critical  orders and cancels (trading's POST and DELETE)    never shed
    normal    everything else of the order path and the rest     shed at `normal_at` in flight
    low       social and gamification                            shed at `low_at` in flight
"""

from __future__ import annotations

from enum import IntEnum

# Reads and writes a trader can do without, first to go.
LOW_PRIORITY_SERVICES = frozenset({"social", "gamification"})
CRITICAL_METHODS = frozenset({"POST", "DELETE"})  # place and cancel orders


class Priority(IntEnum):
    CRITICAL = 0
    NORMAL = 1
    LOW = 2


def priority_of(service: str, method: str) -> Priority:
    if service == "trading" and method in CRITICAL_METHODS:
        return Priority.CRITICAL
    if service in LOW_PRIORITY_SERVICES:
        return Priority.LOW
    return Priority.NORMAL


class LoadShedder:
    """Counts requests in flight and says which may start (one event loop: no lock)."""

    def __init__(self, *, normal_at: int, low_at: int) -> None:
        self.ceilings = {Priority.NORMAL: normal_at, Priority.LOW: min(low_at, normal_at)}
        self.in_flight = 0

    def admit(self, priority: Priority) -> bool:
        """May a request of `priority` start now? (The caller then counts it with `started`.)"""
        ceiling = self.ceilings.get(priority)
        return ceiling is None or self.in_flight < ceiling

    def started(self) -> None:
        self.in_flight += 1

    def finished(self) -> None:
        self.in_flight -= 1
