from gekko.breaker import CircuitBreaker, State


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **kw) -> tuple[CircuitBreaker, list[tuple[State, State]]]:
    seen: list[tuple[State, State]] = []
    b = CircuitBreaker(
        "trading", clock=clock, on_transition=lambda _, o, n: seen.append((o, n)), **kw
    )
    return b, seen


def test_opens_on_the_fifth_consecutive_failure():
    clock = Clock()
    b, seen = breaker(clock)
    for _ in range(4):
        assert b.allow()
        b.record_failure()
    assert b.state is State.CLOSED
    b.record_success()  # a success resets the run
    for _ in range(4):
        b.record_failure()
    assert b.state is State.CLOSED
    b.record_failure()
    assert b.state is State.OPEN  # immediately, on the failing call
    assert not b.allow()
    assert seen == [(State.CLOSED, State.OPEN)]


def test_opens_on_half_failures_over_twenty_requests_in_the_window():
    clock = Clock()
    b, _ = breaker(clock)
    # Alternate: never 5 in a row; 9 failures out of 19 is not enough requests yet.
    for i in range(19):
        b.record_failure() if i % 2 else b.record_success()
    assert b.state is State.CLOSED
    b.record_failure()  # 10 of 20 = 50 %
    assert b.state is State.OPEN


def test_old_requests_leave_the_rolling_window():
    clock = Clock()
    b, _ = breaker(clock)
    for _ in range(10):
        b.record_failure()
        b.record_success()
    assert b.state is State.CLOSED  # 10/20 would trip, but the last call was a success
    clock.now += 11  # the window is 10 s: all of that is forgotten
    assert b.window() == (0, 0)
    b.record_failure()
    assert b.state is State.CLOSED


def test_four_xx_are_not_failures_callers_record_them_as_success():
    # The proxy records a 4xx as success; a run of 4xx therefore never opens the breaker.
    clock = Clock()
    b, _ = breaker(clock)
    for _ in range(50):
        b.record_success()
    assert b.state is State.CLOSED
    assert b.window() == (50, 0)


def test_retry_after_counts_down_then_half_open_admits_limited_probes():
    clock = Clock()
    b, seen = breaker(clock, open_s=30, half_open_probes=3)
    for _ in range(5):
        b.record_failure()
    assert b.retry_after() == 30
    clock.now += 12.5
    assert b.retry_after() == 18
    assert not b.allow()
    clock.now += 17.5
    assert [b.allow() for _ in range(4)] == [True, True, True, False]
    assert b.state is State.HALF_OPEN
    b.record_success()
    assert b.state is State.CLOSED
    assert seen[-2:] == [(State.OPEN, State.HALF_OPEN), (State.HALF_OPEN, State.CLOSED)]


def test_a_failed_probe_reopens_for_a_full_interval():
    clock = Clock()
    b, _ = breaker(clock, open_s=30)
    for _ in range(5):
        b.record_failure()
    clock.now += 30
    assert b.allow()
    b.record_failure()
    assert b.state is State.OPEN
    assert b.retry_after() == 30
    assert not b.allow()


def test_released_probe_frees_its_slot():
    clock = Clock()
    b, _ = breaker(clock, half_open_probes=1)
    for _ in range(5):
        b.record_failure()
    clock.now += 30
    assert b.allow()
    assert not b.allow()
    b.release()  # the client went away: no outcome
    assert b.allow()


def test_as_dict_for_the_services_view():
    clock = Clock()
    b, _ = breaker(clock)
    b.record_failure()
    assert b.as_dict() == {
        "state": "closed",
        "consecutive_failures": 1,
        "window_requests": 1,
        "window_failures": 1,
        "retry_after_s": None,
    }


def test_state_gauge_is_ordered_by_severity_and_an_idle_open_breaker_reads_half_open():
    from prometheus_client import CollectorRegistry

    from gekko.gateway.discovery import ServiceRegistryCache
    from gekko.gateway.telemetry import GatewayStateCollector

    clock = Clock()
    closed, _ = breaker(clock)
    tripped, _ = breaker(clock, open_s=30)
    probing, _ = breaker(clock, open_s=30)
    for b in (tripped, probing):
        for _ in range(5):
            b.record_failure()
    clock.now += 10
    assert probing.allow() is False
    clock.now += 25  # past open_s for both; only `probing` gets a call and moves
    assert probing.allow() and probing.state is State.HALF_OPEN
    assert tripped.state is State.OPEN and tripped.probe_due()
    registry = CollectorRegistry()
    breakers = {"users": closed, "trading": tripped, "portfolio": probing}
    registry.register(GatewayStateCollector(ServiceRegistryCache(["users"]), breakers))

    def gauge(service: str) -> float | None:
        return registry.get_sample_value("gekko_circuit_breaker_state", {"service": service})

    assert (gauge("users"), gauge("portfolio"), gauge("trading")) == (0, 1, 1)
    tripped.allow()
    tripped.record_failure()  # the probe failed: open again, calls refused
    assert gauge("trading") == 2


def test_a_ready_instance_half_opens_the_circuit_before_its_window_ends():
    """A datastore blip: the circuit opened, then active health checks begun after that see an
    instance ready (ready_again): the next call is a probe now, not 30 s later, and closes it."""
    clock = Clock()
    b, seen = breaker(clock)
    for _ in range(5):
        b.record_failure()
    assert b.state is State.OPEN and not b.allow()
    assert not b.ready_again(clock.now - 0.5)  # a check begun before it opened proves nothing
    clock.now += 3  # far inside open_s (30 s)
    assert b.ready_again(clock.now - 0.1)
    assert b.state is State.HALF_OPEN and b.allow()
    b.record_success()
    assert b.state is State.CLOSED
    assert seen == [
        (State.CLOSED, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
        (State.HALF_OPEN, State.CLOSED),
    ]
    assert not b.ready_again(clock.now)  # nothing to do on a closed circuit


def test_health_checks_that_pass_while_calls_fail_are_not_believed_until_it_closes():
    """A fault the health check cannot see (it passes, the calls fail): one round of probes,
    then the fixed window paces the circuit again, however often the checks pass."""
    clock = Clock()
    b, _ = breaker(clock)
    for _ in range(5):
        b.record_failure()
    assert b.ready_again(clock.now) and b.allow()
    b.record_failure()  # the probe fails: reopened
    assert b.state is State.OPEN
    clock.now += 1
    assert not b.ready_again(clock.now) and b.state is State.OPEN
    assert b.retry_after() == 29
    clock.now += 29  # the window paces it
    assert b.allow() and b.state is State.HALF_OPEN
    b.record_success()
    # Closed again: a later outage's recovery is followed by the health checks once more.
    for _ in range(5):
        b.record_failure()
    assert b.ready_again(clock.now) and b.state is State.HALF_OPEN
