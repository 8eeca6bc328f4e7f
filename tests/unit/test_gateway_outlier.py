import asyncio

import aiohttp

from gekko.gateway.discovery import Instance, ServiceRegistryCache
from gekko.gateway.healthcheck import ActiveHealthChecker
from gekko.gateway.outlier import EjectionPolicy, HealthCheckPolicy, HostState


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_ejection_duration_grows_thirty_seconds_per_ejection_capped_at_300():
    policy = EjectionPolicy()
    assert [policy.duration(n) for n in (1, 2, 3, 10, 11, 50)] == [30, 60, 90, 300, 300, 300]


def test_five_consecutive_failures_eject():
    policy = EjectionPolicy()
    hosts = [HostState(), HostState()]
    for _ in range(4):
        assert not policy.record(hosts[0], hosts, True, 100.0)
    assert not policy.record(hosts[0], hosts, False, 100.0)  # success resets the run
    for _ in range(4):
        assert not policy.record(hosts[0], hosts, True, 100.0)
    assert policy.record(hosts[0], hosts, True, 100.0)
    assert hosts[0].ejected_until == 130.0 and hosts[0].times_ejected == 1
    # Back after 30 s; ejected again, now for 60 s.
    for _ in range(5):
        policy.record(hosts[0], hosts, True, 131.0)
    assert hosts[0].ejected_until == 191.0 and hosts[0].times_ejected == 2


def test_never_more_than_half_of_a_service_is_ejected():
    policy = EjectionPolicy()
    hosts = [HostState() for _ in range(4)]
    ejected = [
        any([policy.record(h, hosts, True, 0.0) for _ in range(5)]) for h in hosts
    ]  # fmt: skip
    assert ejected == [True, True, False, False]
    single = [HostState()]
    assert not any(policy.record(single[0], single, True, 0.0) for _ in range(20))


def test_health_check_thresholds():
    policy = HealthCheckPolicy()
    host = HostState()
    assert [policy.apply(host, False) for _ in range(3)] == [None, None, False]
    assert not host.healthy
    assert policy.apply(host, True) is None
    assert policy.apply(host, False) is None  # a failure resets the passing run
    assert [policy.apply(host, True) for _ in range(2)] == [None, True]
    assert host.healthy


def _inst(iid: str) -> Instance:
    return Instance("trading", iid, f"http://127.0.0.1:9{iid[-1]}00", "ok", 1_000.0)


def test_cache_routes_around_unhealthy_and_ejected_and_shows_it():
    clock = Clock()
    cache = ServiceRegistryCache(clock=clock, stale_after_s=600)
    cache.replace([_inst("t1"), _inst("t2")])
    t1, t2 = "http://127.0.0.1:9100", "http://127.0.0.1:9200"
    for _ in range(5):
        cache.record_outcome("trading", t1, True)
    assert {cache.pick("trading").url for _ in range(4)} == {t2}
    # t2 may not be ejected too (max half), however often it fails.
    for _ in range(10):
        assert not cache.record_outcome("trading", t2, True)
    view = {i["instance_id"]: i for i in cache.snapshot()["trading"]}
    assert view["t1"]["ejected"] and view["t1"]["ejected_until"] == 1_030.0
    assert view["t1"]["times_ejected"] == 1 and not view["t1"]["routable"]
    assert view["t2"]["consecutive_failures"] == 10 and view["t2"]["routable"]
    assert cache.counts()["trading"] == {"ejected": 1, "ok": 1}
    clock.now += 31
    cache.host(t2).healthy = False  # active checks failed it
    assert {cache.pick("trading").url for _ in range(4)} == {t1}
    cache.host(t1).healthy = False  # nothing healthy left: route over all (panic mode)
    assert {cache.pick("trading").url for _ in range(4)} == {t1, t2}


class _Answer:
    def __init__(self, status: int) -> None:
        self.status = status

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False

    async def read(self) -> bytes:
        return b"{}"


class _Session:
    """aiohttp's session as the checker uses it: status per URL, or refused."""

    def __init__(self) -> None:
        self.status: dict[str, int | None] = {}

    def get(self, url: str, timeout=None):
        status = self.status.get(url.removesuffix("/health"))
        if status is None:
            raise aiohttp.ClientConnectionError("refused")
        return _Answer(status)


def test_an_instance_ready_after_failing_is_unejected_and_every_pass_reported():
    clock = Clock()
    cache = ServiceRegistryCache(clock=clock, stale_after_s=600)
    cache.replace([_inst("t1"), _inst("t2")])
    t1, t2 = "http://127.0.0.1:9100", "http://127.0.0.1:9200"
    session = _Session()
    ready: list[str] = []
    circuit_open = [False]
    checker = ActiveHealthChecker(
        session,  # type: ignore[arg-type]
        cache,
        HealthCheckPolicy(interval_s=5, recovery_interval_s=1),
        on_ready=lambda inst, began: ready.append(inst.url),
        urgent=lambda: circuit_open[0],
    )
    session.status = {t1: 200, t2: 200}
    asyncio.run(checker.check_once())
    assert ready == [t1, t2] and checker.next_interval() == 5  # all well: the slow pace
    ready.clear()
    circuit_open[0] = True
    assert checker.next_interval() == 1  # a circuit is open: watch closely
    circuit_open[0] = False
    for _ in range(5):
        cache.record_outcome("trading", t1, True)  # ejected for 30 s by passive detection
    session.status = {t1: 503, t2: 200}  # its datastore is away: not ready
    asyncio.run(checker.check_once())
    assert checker.next_interval() == 1 and ready == [t2]
    assert cache.host(t1).ejected(clock.now)
    ready.clear()
    session.status = {t1: 200, t2: 200}  # back: ready again, long before the 30 s
    asyncio.run(checker.check_once())
    assert ready == [t1, t2]
    assert not cache.host(t1).ejected(clock.now)
    assert {cache.pick("trading").url for _ in range(4)} == {t1, t2}
    assert checker.next_interval() == 5
    ready.clear()
    session.status = {t2: 200}  # refused counts as failing too
    asyncio.run(checker.check_once())
    assert ready == [t2] and checker.next_interval() == 1
