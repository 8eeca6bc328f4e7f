"""Each venue's health as this process sees it from the calls it makes: latency, outcomes, the
request budget the venue reports left, and whether the venue is degraded.

A venue is degraded after `failures_to_degrade` calls in a row failed on the venue's side (no
answer, an unreadable one, a 5xx). A refusal (a 4xx: a bad key, too little balance, a 429) is
the venue answering, not failing. While degraded, orders to it are refused at once (the caller
gets a problem+json 503 with Retry-After) rather than each waiting out a timeout; after
`cool_off_s` one call is let through as a probe (and the next one `cool_off_s` later): its
success ends the degradation, its failure starts another cool-off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gekko.exchanges.base import ExchangeError


class Outcome(StrEnum):
    OK = "ok"
    REFUSED = "refused"  # the venue answered no (4xx): it is up
    FAILED = "failed"  # no answer, an unreadable one, a 5xx: the venue is failing


def outcome_of(error: ExchangeError | None) -> Outcome:
    """A call without an answer (the adapters mark those unsure, or not sent when the host could
    not be reached) or with a 5xx failed (ExchangeError.venue_failed); any
    other error is an answer: a 4xx, a refusal in a 2xx body (Coinbase's `success: false`, an
    OANDA fill-or-kill that could not fill), or this side's own budget running out."""
    if error is None:
        return Outcome.OK
    if error.venue_failed:
        return Outcome.FAILED
    return Outcome.REFUSED


@dataclass
class _VenueState:
    failures: int = 0  # in a row
    degraded_until: float | None = None  # monotonic; None while healthy


@dataclass
class VenueHealth:
    registry: CollectorRegistry | None = None
    failures_to_degrade: int = 3
    cool_off_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _states: dict[str, _VenueState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        registry = self.registry if self.registry is not None else CollectorRegistry()
        self._calls = Counter(
            "gekko_venue_requests",
            "Calls to a venue's API by outcome (ok; refused: a 4xx; failed: no answer or a 5xx).",
            ["venue", "outcome"],
            registry=registry,
        )
        self._latency = Histogram(
            "gekko_venue_request_duration_seconds",
            "Time for a venue to answer a call (answered calls only).",
            ["venue"],
            buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self._degraded = Gauge(
            "gekko_venue_degraded",
            "1 while the venue is degraded (orders to it refused), else 0.",
            ["venue"],
            registry=registry,
        )
        self._headroom = Gauge(
            "gekko_venue_ratelimit_headroom_ratio",
            "Share of the venue's request budget left, as the venue last reported it "
            "(Binance.US: X-MBX-USED-WEIGHT-1M against 1200 a minute).",
            ["venue"],
            registry=registry,
        )

    def watch(self, venue: str) -> None:
        """Export the venue's series from the first scrape, before any call."""
        self._degraded.labels(venue).set(0)
        for outcome in Outcome:
            self._calls.labels(venue, outcome.value)

    def retry_after_s(self, venue: str) -> float | None:
        """None when an order may go to the venue now; else the seconds until it may. The
        first order after a cool-off is let through as the probe; the others wait for its
        outcome, or for the next probe a cool-off later if it never reaches the venue."""
        state = self._states.get(venue)
        if state is None or state.degraded_until is None:
            return None
        now = self.clock()
        if now < state.degraded_until:
            return max(1.0, state.degraded_until - now)
        state.degraded_until = now + self.cool_off_s
        return None

    def degraded(self) -> list[str]:
        return [venue for venue, state in self._states.items() if state.degraded_until is not None]

    def is_degraded(self, venue: str) -> bool:
        state = self._states.get(venue)
        return state is not None and state.degraded_until is not None

    def record(
        self,
        venue: str,
        error: ExchangeError | None,
        latency_s: float | None = None,
        headroom: float | None = None,
    ) -> Outcome:
        outcome = outcome_of(error)
        self._calls.labels(venue, outcome.value).inc()
        if latency_s is not None and outcome is not Outcome.FAILED:
            self._latency.labels(venue).observe(latency_s)
        if headroom is not None:
            self._headroom.labels(venue).set(headroom)
        state = self._states.setdefault(venue, _VenueState())
        if outcome is Outcome.FAILED:
            state.failures += 1
            if state.degraded_until is not None or state.failures >= self.failures_to_degrade:
                state.degraded_until = self.clock() + self.cool_off_s
                self._degraded.labels(venue).set(1)
        else:
            state.failures = 0
            state.degraded_until = None
            self._degraded.labels(venue).set(0)
        return outcome
