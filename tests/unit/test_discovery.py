from gekko.config import DOMAIN_SERVICES
from gekko.gateway.discovery import Instance, ServiceRegistryCache, parse_record


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def inst(iid: str, health: str = "ok", beat: float = 1_000.0, service: str = "trading"):
    return Instance(service, iid, f"http://127.0.0.1:9{iid[-1]}00", health, beat)


def test_round_robin_over_healthy_only():
    cache = ServiceRegistryCache(clock=Clock())
    cache.replace([inst("t1"), inst("t2", health="degraded"), inst("t3")])
    picked = [cache.pick("trading").instance_id for _ in range(6)]
    assert picked == ["t1", "t3", "t1", "t3", "t1", "t3"]


def test_stale_entries_are_dropped():
    clock = Clock()
    cache = ServiceRegistryCache(clock=clock, stale_after_s=15)
    cache.replace([inst("t1", beat=1_000.0), inst("t2", beat=990.0)])
    clock.now = 1_010.0  # t2 last beat 20 s ago
    assert [i.instance_id for i in cache.routable("trading")] == ["t1"]
    assert [i["instance_id"] for i in cache.snapshot()["trading"]] == ["t1"]
    clock.now = 1_100.0
    assert cache.pick("trading") is None


def test_static_fallback_when_no_dynamic_instance():
    static = {"users": ["http://127.0.0.1:9101/", "http://127.0.0.1:9102"]}
    cache = ServiceRegistryCache(static=static, clock=Clock())
    # Redis never answered: static URLs serve, round-robin, trailing slash removed.
    urls = [cache.pick("users").url for _ in range(3)]
    assert urls == ["http://127.0.0.1:9101", "http://127.0.0.1:9102", "http://127.0.0.1:9101"]
    assert cache.pick("trading") is None
    # A healthy registered instance takes precedence over static ones.
    cache.replace([inst("u1", service="users")])
    assert cache.pick("users").instance_id == "u1"


def test_pick_excludes_tried_and_ejected_instances():
    clock = Clock()
    cache = ServiceRegistryCache(clock=clock)
    cache.replace([inst("t1"), inst("t2")])
    first = cache.pick("trading")
    other = cache.pick("trading", exclude=[first.url])
    assert other.url != first.url
    assert cache.pick("trading", exclude=[first.url, other.url]) is None

    cache.eject(first.url, 10)
    assert {cache.pick("trading").url for _ in range(4)} == {other.url}
    cache.eject(other.url, 10)  # never eject everything
    assert len(cache.routable("trading")) == 2
    clock.now += 11
    assert len({cache.pick("trading").url for _ in range(4)}) == 2


def test_snapshot_lists_every_service_and_counts_health():
    cache = ServiceRegistryCache(clock=Clock())
    cache.replace([inst("t1"), inst("t2", health="down")])
    snap = cache.snapshot()
    assert set(snap) == set(DOMAIN_SERVICES) and "signals" in snap
    assert snap["users"] == []
    assert cache.counts()["trading"] == {"ok": 1, "down": 1}


def test_parse_record_rejects_garbage_and_expired():
    raw = (
        b'{"service":"users","instance_id":"users-1","url":"http://h:1/","health":"ok",'
        b'"registered_at":1.0,"last_heartbeat":2.5}'
    )
    parsed = parse_record(raw)
    assert parsed == Instance("users", "users-1", "http://h:1", "ok", 2.5, registered_at=1.0)
    assert parse_record(None) is None
    assert parse_record(b"not json") is None
    assert parse_record(b'{"service":"users"}') is None


def test_a_new_registration_on_a_known_address_starts_clean():
    # A replaced instance comes back on the same port: its predecessor's ejection and failed
    # health checks must not keep it out of rotation.
    clock = Clock()
    cache = ServiceRegistryCache(clock=clock)
    old = Instance("trading", "t1", "http://127.0.0.1:9100", "ok", 1_000.0, registered_at=900.0)
    peer = Instance("trading", "t2", "http://127.0.0.1:9200", "ok", 1_000.0, registered_at=900.0)
    cache.replace([old, peer])
    cache.eject(old.url, 300)
    cache.host(old.url).healthy = False
    cache.replace([old, peer])  # same registration: still out
    assert [i.instance_id for i in cache.routable("trading")] == ["t2"]

    new = Instance("trading", "t1", old.url, "ok", 1_001.0, registered_at=1_000.5)
    cache.replace([new, peer])
    assert sorted(i.instance_id for i in cache.routable("trading")) == ["t1", "t2"]
