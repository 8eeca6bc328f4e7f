"""The service_containers module's draining and canary judgement, against a fake Docker."""

import threading

import pytest
from ansible_collections.gekko.platform.plugins.modules import service_containers as sc
from docker.errors import APIError, NotFound

PARAMS = {
    "drain_signal": "SIGUSR1",
    "drain_seconds": 3,
    "stop_timeout": 10,
    "canary": {"window_seconds": 20, "max_error_rate": 0.05, "min_requests": 20},
}


class Clock:
    """time.time and time.sleep of the module, with every call recorded in `events`."""

    def __init__(self, events):
        self.now = 1000.0
        self.events = events

    def time(self):
        return self.now

    def sleep(self, seconds):
        self.events.append(("sleep", seconds))
        self.now += seconds


class FakeContainer:
    def __init__(self, name, events, status="running", gone=False):
        self.name, self.status, self.events, self.gone = name, status, events, gone

    def kill(self, signal):
        self.events.append(("kill", self.name, signal))

    def stop(self, timeout):
        if self.gone:
            raise NotFound("No such container")
        self.events.append(("stop", self.name))

    def restart(self, timeout):
        self.events.append(("restart", self.name))

    def start(self):
        self.events.append(("start", self.name))


class FakeModule:
    def __init__(self, **params):
        self.params = dict(PARAMS, **params)


@pytest.fixture
def events(monkeypatch):
    recorded = []
    clock = Clock(recorded)
    monkeypatch.setattr(sc.time, "time", clock.time)
    monkeypatch.setattr(sc.time, "sleep", clock.sleep)
    return recorded


def test_a_round_is_drained_together_in_one_window(events):
    reconciler = sc.Reconciler(FakeModule(), client=None)
    olds = [FakeContainer(f"gekko-{n}", events) for n in ("users", "trading", "portfolio")]
    reconciler.drain_and_stop(olds)
    kills = [e for e in events if e[0] == "kill"]
    assert [e[1] for e in kills] == ["gekko-users", "gekko-trading", "gekko-portfolio"]
    # Every container got its drain signal before the single wait, and was stopped after it.
    assert events.index(("sleep", 3)) == 3 and events.count(("sleep", 3)) == 1
    assert [e[1] for e in events[4:]] == ["gekko-users", "gekko-trading", "gekko-portfolio"]


def test_stopped_containers_are_not_signalled_and_need_no_wait(events):
    reconciler = sc.Reconciler(FakeModule(), client=None)
    reconciler.drain_and_stop([FakeContainer("gekko-users", events, status="exited")])
    assert events == [("stop", "gekko-users")]


def test_a_container_already_gone_is_no_error(events):
    reconciler = sc.Reconciler(FakeModule(), client=None)
    reconciler.drain_and_stop(
        [FakeContainer("gekko-users-previous", events, gone=True), FakeContainer("x", events)]
    )
    assert ("stop", "x") in events


def test_a_failed_round_restarts_drained_containers_it_had_not_yet_set_aside(events):
    # Drained (maybe still running, out of discovery) but not renamed when the round failed:
    # a plain start would leave a running one drained, so they are restarted.
    reconciler = sc.Reconciler(FakeModule(), client=None)
    reconciler.restore(new=[], previous={}, stopped=[FakeContainer("gekko-users", events)])
    assert events == [("restart", "gekko-users")]


def metrics(total, errors):
    ok = total - errors
    return (
        f'gekko_http_requests_total{{route="/api/v1/x",status_class="2xx"}} {ok}\n'
        f'gekko_http_requests_total{{route="/api/v1/x",status_class="5xx"}} {errors}\n'
    )


def canary(samples, **canary_settings):
    """Run canary_check on a canary whose metrics read as `samples`, one per fetch."""
    module = FakeModule(canary=dict(PARAMS["canary"], **canary_settings))
    reconciler = sc.Reconciler(module, client=None)
    fetched = iter(samples)
    reconciler.fetch = lambda url: metrics(*next(fetched))
    step = {
        "slot": ("gekko-market-data", 8104),
        "spec": {
            "name": "gekko-market-data",
            "service": "market_data",
            "metrics_url": "http://127.0.0.1:{port}/metrics",
        },
    }
    try:
        reconciler.canary_check(step)
        return None, reconciler.actions[-1]
    except sc.RolloutError as exc:
        return str(exc), reconciler.actions[-1]


def test_a_clean_canary_over_the_minimum_sample_is_promoted(events):
    error, action = canary([(40, 0)])
    assert error is None and action["verdict"] == "pass" and action["requests"] == 40
    assert events == [("sleep", 20)]


def test_a_short_sample_is_watched_longer_until_it_is_large_enough(events):
    error, action = canary([(8, 0), (15, 0), (21, 0)])
    assert error is None and action["requests"] == 21
    assert events == [("sleep", 20), ("sleep", 1), ("sleep", 1)]


def test_a_canary_that_never_gets_enough_traffic_is_not_promoted(events):
    error, action = canary([(3, 0)] * 30)
    assert action["verdict"] == "too-few-requests"
    assert "received 3 requests in 40s, fewer than the 20 needed" in error
    assert sum(e[1] for e in events) >= 40, "it was watched for two windows"


def test_a_canary_serving_errors_fails_on_its_rate_not_a_padded_one(events):
    error, action = canary([(3, 1)])
    assert action["verdict"] == "fail"
    assert "served 33.3% server errors over 3 requests (limit 5.0%)" in error


def test_only_the_first_replaced_instance_of_a_canary_service_is_judged():
    def step(name, strategy, action="replace"):
        return {"slot": (name, 1), "action": action, "spec": {"strategy": strategy}}

    first = [step("t1", "canary"), step("u1", "rolling"), step("m1", "canary", "start")]
    assert [s["slot"][0] for s in sc.canary_steps(first, 0)] == ["t1"]
    assert sc.canary_steps([step("t2", "canary")], 1) == []


class FakeEngine:
    """images.get and containers.create of a Docker client; created containers' arguments kept."""

    def __init__(self):
        self.images = self.containers = self
        self.created = []

    def get(self, ref):
        return type("Image", (), {"id": "sha256:" + ref})()

    def create(self, **kwargs):
        self.created.append(kwargs)
        return FakeContainer(kwargs["name"], [])


def container_spec(**extra):
    spec = dict(
        name="gekko-users",
        service="users",
        image="gekko/app:1",
        command=["serve", "users"],
        env={},
        env_files=[],
        labels={},
        read_only=True,
        tmpfs=["/tmp"],
        cap_drop=["ALL"],
        security_opts=["no-new-privileges"],
        init=True,
        restart_policy="unless-stopped",
        network_mode="host",
        mounts=None,
        device_requests=None,
        log=None,
    )
    spec.update(extra)
    return spec


def test_a_log_driver_reaches_docker_and_the_spec_hash():
    syslog = {"driver": "syslog", "options": {"tag": "{{.Name}}", "syslog-format": "rfc5424micro"}}
    engine = FakeEngine()
    module = FakeModule(
        containers=[container_spec(), container_spec(name="b", log=syslog)], selector={}
    )
    plain, logged = sc.Reconciler(module, engine).desired_specs()
    assert plain["log"] is None and logged["log"] == syslog
    assert plain["hash"] != logged["hash"]
    reconciler = sc.Reconciler(module, engine)
    reconciler.create(plain, "gekko-users", 8101)
    reconciler.create(logged, "b", 8101)
    assert "log_config" not in engine.created[0]
    assert engine.created[1]["log_config"] == {"Type": "syslog", "Config": syslog["options"]}


class NoImages(FakeEngine):
    def get(self, ref):
        raise sc.ImageNotFound("No such image: " + ref)


class Failed(Exception):
    pass


def test_a_missing_image_fails_a_run_but_a_check_run_plans_a_replacement():
    """A deploy's check run comes before the image it would build exists: it must report the
    containers as replaced, while a real run refuses to start without the image."""

    def fail_json(**result):
        raise Failed(result["msg"])

    def reconciler(check_mode):
        module = FakeModule(containers=[container_spec()], selector={})
        module.check_mode, module.fail_json = check_mode, fail_json
        return sc.Reconciler(module, NoImages())

    with pytest.raises(Failed, match="gekko/app:1 for container gekko-users is not on the host"):
        reconciler(check_mode=False).desired_specs()
    (planned,) = reconciler(check_mode=True).desired_specs()
    assert planned["image_id"] == "missing:gekko/app:1"
    present = sc.Reconciler(FakeModule(containers=[container_spec()], selector={}), FakeEngine())
    assert planned["hash"] != present.desired_specs()[0]["hash"]


def test_a_start_period_of_zero_means_none_not_the_images():
    # The engine reads 0 as "inherit the image's" (20 s in the platform's images), which made a
    # failing health check take 20 s longer to fail a rollout than its settings say.
    assert sc.start_period_ns({"start_period": 0}) == 1_000_000
    assert sc.start_period_ns({"start_period": 15}) == 15 * sc.NANO
    assert sc.start_period_ns({"test": ["CMD", "true"]}) == 0  # left out: the image's


class WarningModule(FakeModule):
    def __init__(self, **params):
        super().__init__(
            **{"memory_floor_mb": 256, "memory_per_container_mb": 128, "memory_wait_seconds": 60,
               **params}
        )  # fmt: skip
        self.warnings = []

    def warn(self, message):
        self.warnings.append(message)


def _steps(*actions):
    return [
        {"slot": (f"gekko-s{i}", 8100 + i), "action": action, "spec": {"service": f"s{i}"}}
        for i, action in enumerate(actions)
    ]


def _memory(monkeypatch, *readings):
    """The host's MemAvailable, one reading per check (the last one repeats)."""
    seen = list(readings)
    monkeypatch.setattr(
        sc, "available_memory_mb", lambda: seen.pop(0) if len(seen) > 1 else seen[0]
    )


def test_a_round_that_fits_in_memory_starts_whole(events, monkeypatch):
    _memory(monkeypatch, 4096)
    module = WarningModule()
    steps = _steps("create", "create", "switch")
    assert sc.Reconciler(module, client=None).memory_batch(steps) == steps
    assert module.warnings == [] and events == []


def test_under_memory_pressure_a_round_is_narrowed_to_what_fits(events, monkeypatch):
    # 256 MiB above the floor: two new containers fit; a replaced one frees its own first.
    _memory(monkeypatch, 512)
    module = WarningModule()
    steps = _steps("replace", "create", "create", "create")
    batch = sc.Reconciler(module, client=None).memory_batch(steps)
    assert batch == steps[:3]
    assert module.warnings == [
        "512 MiB of memory available and a 256 MiB floor: starting gekko-s0, gekko-s1, gekko-s2 "
        "first, then the rest of the round (1 more)"
    ]


def test_with_no_room_a_rollout_pauses_until_memory_frees_up(events, monkeypatch):
    _memory(monkeypatch, 300, 300, 300, 1024)
    module = WarningModule()
    steps = _steps("create", "create")
    assert sc.Reconciler(module, client=None).memory_batch(steps) == steps
    assert events == [("sleep", 2)] * 3  # paused 6 s
    assert module.warnings == [
        "300 MiB of memory available, under the 256 MiB floor plus 128 MiB for gekko-s0: "
        "pausing the rollout for memory to free up"
    ]


def test_a_rollout_that_never_finds_memory_fails_naming_it(events, monkeypatch):
    _memory(monkeypatch, 200)
    module = WarningModule(memory_wait_seconds=10)
    with pytest.raises(sc.RolloutError) as failed:
        sc.Reconciler(module, client=None).memory_batch(_steps("create"))
    assert str(failed.value) == (
        "only 200 MiB of memory is available on the host, under the 256 MiB floor plus 128 MiB "
        "for gekko-s0, after waiting 10 s; free memory (or move services to another host), or "
        "lower gekko_deploy_memory_floor_mb"
    )
    assert sum(event[1] for event in events) == 10


def test_the_memory_check_is_off_at_a_zero_floor_and_where_there_is_no_meminfo(
    events, monkeypatch, tmp_path
):
    steps = _steps("create")
    with monkeypatch.context() as patched:
        _memory(patched, 1)
        off = sc.Reconciler(WarningModule(memory_floor_mb=0), client=None)
        assert off.memory_batch(steps) == steps
    assert sc.available_memory_mb(str(tmp_path / "none")) is None
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24576000 kB\nMemAvailable:    2097152 kB\n")
    assert sc.available_memory_mb(str(meminfo)) == 2048


class StartFails(FakeContainer):
    """A container the engine created but cannot start (a port taken, a bad mount)."""

    def start(self):
        raise APIError("driver failed programming external connectivity")

    def remove(self, force):
        self.events.append(("remove", self.name))


class HalfStarting(FakeEngine):
    def __init__(self, events):
        super().__init__()
        self.events = events

    def create(self, **kwargs):
        self.created.append(kwargs)
        kind = StartFails if kwargs["name"] == "gekko-trading" else FakeContainer
        return kind(kwargs["name"], self.events)


def test_a_round_starts_every_container_at_once_and_a_failed_start_leaves_none_behind():
    events = []
    module = FakeModule(containers=[container_spec()], selector={})
    reconciler = sc.Reconciler(module, HalfStarting(events))
    spec = reconciler.desired_specs()[0]
    steps = [
        dict(spec=spec, action="create", slot=(name, port), old=None)
        for name, port in (("gekko-users", 8101), ("gekko-trading", 8102), ("gekko-social", 8105))
    ]
    new = []
    with pytest.raises(APIError, match="external connectivity"):
        reconciler.start_all(steps, existing={}, new=new)
    # The two that started are handed back for the revert to remove; the one that could not
    # start was removed at once, so the slot's name is free for the container it replaced.
    assert sorted(c.name for _step, c in new) == ["gekko-social", "gekko-users"]
    assert ("remove", "gekko-trading") in events
    assert {e for e in events if e[0] == "start"} == {
        ("start", "gekko-users"),
        ("start", "gekko-social"),
    }


class StartsTogether(FakeContainer):
    """Starts only once every container of its round is starting: one by one, none would."""

    barrier = None

    def start(self):
        self.barrier.wait(timeout=5)
        self.events.append(("start", self.name))


def test_a_rounds_containers_are_started_at_the_same_time_not_one_after_another():
    events = []
    StartsTogether.barrier = threading.Barrier(3)

    class Engine(FakeEngine):
        def create(self, **kwargs):
            return StartsTogether(kwargs["name"], events)

    module = FakeModule(containers=[container_spec()], selector={})
    reconciler = sc.Reconciler(module, Engine())
    spec = reconciler.desired_specs()[0]
    names = ["gekko-users", "gekko-trading", "gekko-social"]
    steps = [
        dict(spec=spec, action="create", slot=(n, 8100 + i), old=None) for i, n in enumerate(names)
    ]
    new = []
    reconciler.start_all(steps, existing={}, new=new)
    assert [c.name for _step, c in new] == names, "in the steps' order, for the record"
    assert sorted(e[1] for e in events) == sorted(names)
