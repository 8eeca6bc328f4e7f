"""A circuit breaker per upstream service (CLOSED -> OPEN -> HALF_OPEN -> CLOSED).

Trips on `consecutive_failures` failures in a row, or on a failure rate of at least
`failure_rate` over at least `min_requests` requests in the rolling `window_s`. The decision is
taken on the failing call itself, so the breaker opens the moment the threshold is crossed.
While OPEN every call is refused until `open_s` has passed; then HALF_OPEN lets up to
`half_open_probes` calls through: a success closes the circuit, a failure reopens it.
Callers decide what a failure is (5xx, timeouts, connect errors; never a 4xx).

Recovery follows the fault (ARCHITECTURE.md): `ready_again` half-opens an OPEN circuit at once
when the gateway's active health checks, begun after it opened, see one of the service's
instances ready, so a datastore blip of d seconds costs about d seconds, not `open_s`. Should
those probes fail anyway (the health check passes but the calls do not: a fault it cannot see),
the health checks are not believed again until the circuit has closed, and `open_s` paces the
probes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from enum import IntEnum


class State(IntEnum):
    # gekko_circuit_breaker_state encodes these differently (by severity): see gateway.telemetry.
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


Transition = Callable[[str, State, State], None]


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        consecutive_failures: int = 5,
        failure_rate: float = 0.5,
        min_requests: int = 20,
        window_s: int = 10,
        open_s: float = 30.0,
        half_open_probes: int = 3,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Transition | None = None,
    ) -> None:
        self.name = name
        self.consecutive_limit = consecutive_failures
        self.failure_rate = failure_rate
        self.min_requests = min_requests
        self.window_s = max(1, int(window_s))
        self.open_s = open_s
        self.half_open_probes = half_open_probes
        self.clock = clock
        self.on_transition = on_transition
        self.state = State.CLOSED
        self.consecutive = 0
        self.opened_at = 0.0
        self._probes = 0
        self._health_believed = True
        self._half_opened_by_health = False
        # One-second buckets: [second, requests, failures]; O(window) memory at any rate.
        self._buckets = [[-1, 0, 0] for _ in range(self.window_s)]

    # -- admission -------------------------------------------------------------------------
    def allow(self) -> bool:
        """May a call go upstream now? (Counts a half-open probe when it says yes.)"""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN:
            if not self.probe_due():
                return False
            self._move(State.HALF_OPEN)
            self._probes = 0
        if self._probes >= self.half_open_probes:
            return False
        self._probes += 1
        return True

    def probe_due(self) -> bool:
        """Open for `open_s` already: the next `allow` half-opens the circuit."""
        return self.state is State.OPEN and self.clock() - self.opened_at >= self.open_s

    def retry_after(self) -> int:
        """Whole seconds until the breaker half-opens (for the Retry-After header), >= 1."""
        if self.state is not State.OPEN:
            return 1
        return max(1, math.ceil(self.opened_at + self.open_s - self.clock()))

    def ready_again(self, checked_at: float) -> bool:
        """An instance passed an active health check begun at `checked_at` (this breaker's
        clock): half-open the circuit now (True) if it opened before then, unless the health
        checks already proved wrong since it last closed."""
        if self.state is not State.OPEN or not self._health_believed or checked_at < self.opened_at:
            return False
        self._move(State.HALF_OPEN)
        self._probes = 0
        self._half_opened_by_health = True
        return True

    def release(self) -> None:
        """A call admitted by `allow` ended without an outcome (e.g. the client went away)."""
        if self.state is State.HALF_OPEN and self._probes > 0:
            self._probes -= 1

    # -- outcomes --------------------------------------------------------------------------
    def record_success(self) -> None:
        self.consecutive = 0
        if self.state is State.HALF_OPEN:
            self._reset_window()
            self._health_believed = True
            self._half_opened_by_health = False
            self._move(State.CLOSED)
            return
        self._count(failed=False)

    def record_failure(self) -> None:
        if self.state is State.HALF_OPEN:
            if self._half_opened_by_health:
                self._health_believed = False  # healthy by its checks, failing its calls
            self._open()
            return
        if self.state is State.OPEN:
            return  # a call admitted before the trip finished late; already open
        self.consecutive += 1
        self._count(failed=True)
        requests, failures = self.window()
        if self.consecutive >= self.consecutive_limit or (
            requests >= self.min_requests and failures >= self.failure_rate * requests
        ):
            self._open()

    def window(self) -> tuple[int, int]:
        """(requests, failures) in the rolling window."""
        now = int(self.clock())
        requests = failures = 0
        for second, n, f in self._buckets:
            if now - second < self.window_s:
                requests += n
                failures += f
        return requests, failures

    def as_dict(self) -> dict[str, object]:
        requests, failures = self.window()
        return {
            "state": self.state.name.lower(),
            "consecutive_failures": self.consecutive,
            "window_requests": requests,
            "window_failures": failures,
            "retry_after_s": self.retry_after() if self.state is State.OPEN else None,
        }

    # -- internals -------------------------------------------------------------------------
    def _count(self, *, failed: bool) -> None:
        second = int(self.clock())
        bucket = self._buckets[second % self.window_s]
        if bucket[0] != second:
            bucket[0], bucket[1], bucket[2] = second, 0, 0
        bucket[1] += 1
        bucket[2] += failed

    def _reset_window(self) -> None:
        for bucket in self._buckets:
            bucket[0], bucket[1], bucket[2] = -1, 0, 0

    def _open(self) -> None:
        self._half_opened_by_health = False
        self.opened_at = self.clock()
        self.consecutive = 0
        self._reset_window()
        self._move(State.OPEN)

    def _move(self, new: State) -> None:
        old, self.state = self.state, new
        if self.on_transition is not None and old is not new:
            self.on_transition(self.name, old, new)
