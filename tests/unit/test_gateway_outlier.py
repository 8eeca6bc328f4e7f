from gekko.gateway.discovery import Instance, ServiceRegistryCache
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
