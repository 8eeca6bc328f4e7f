"""Planning rules of the service_containers module."""

import pytest
from ansible_collections.gekko.platform.plugins.module_utils import _container_plan as plan


def spec(name, service=None, strategy="rolling", wave=0, h="h1", **extra):
    return dict(
        name=name,
        service=service or name,
        strategy=strategy,
        wave=wave,
        hash=h,
        port=extra.pop("port", 8000),
        alternate_port=extra.pop("alternate_port", 9000),
        **extra,
    )


def actions(steps):
    return [(s["slot"][0], s["action"], s["old"]) for s in steps]


def test_unchanged_running_container_is_left_alone_and_a_stopped_one_started():
    steps, prune = plan.plan(
        [spec("a"), spec("b")],
        {"a": {"hash": "h1", "running": True}, "b": {"hash": "h1", "running": False}},
    )
    assert actions(steps) == [("a", "unchanged", None), ("b", "start", None)]
    assert prune == []


def test_changed_spec_is_replaced_in_place_and_new_ones_created():
    steps, _unused = plan.plan(
        [spec("a", h="h2"), spec("b")], {"a": {"hash": "h1", "running": True}}
    )
    assert actions(steps) == [("a", "replace", "a"), ("b", "create", None)]


def test_blue_green_switches_to_the_other_slot_and_back():
    green = plan.plan(
        [spec("a", strategy="blue_green", h="h2")], {"a": {"hash": "h1", "running": True}}
    )[0]
    assert actions(green) == [("a-green", "switch", "a")]
    assert green[0]["slot"] == ("a-green", 9000)
    blue = plan.plan(
        [spec("a", strategy="blue_green", h="h3")], {"a-green": {"hash": "h2", "running": True}}
    )[0]
    assert actions(blue) == [("a", "switch", "a-green")]
    assert blue[0]["slot"] == ("a", 8000)


def test_blue_green_unchanged_in_green_slot_stays_and_stale_blue_is_pruned():
    steps, prune = plan.plan(
        [spec("a", strategy="blue_green", h="h2")],
        {"a": {"hash": "h1", "running": False}, "a-green": {"hash": "h2", "running": True}},
    )
    assert actions(steps) == [("a-green", "unchanged", None)]
    assert prune == ["a"]


def test_containers_no_longer_wanted_are_pruned():
    _unused, prune = plan.plan(
        [spec("a")], {"a": {"hash": "h1", "running": True}, "old": {"hash": "x", "running": True}}
    )
    assert prune == ["old"]


def test_rounds_follow_waves_then_instance_position():
    steps, _unused = plan.plan(
        [
            spec("db-client", wave=1),
            spec("t1", "trading", wave=1),
            spec("t2", "trading", wave=1),
            spec("users", wave=0),
            spec("same", wave=0),
        ],
        {"same": {"hash": "h1", "running": True}},
    )
    shape = [
        (wave, index, sorted(s["slot"][0] for s in group))
        for wave, index, group in plan.rounds(steps)
    ]
    assert shape == [(0, 0, ["users"]), (1, 0, ["db-client", "t1"]), (1, 1, ["t2"])]

    # A rollback restores without waves: every service's k-th instance in one round.
    flat = [
        (wave, index, sorted(s["slot"][0] for s in group))
        for wave, index, group in plan.rounds(steps, in_waves=False)
    ]
    assert flat == [(0, 0, ["db-client", "t1", "users"]), (0, 1, ["t2"])]


def test_spec_hash_covers_runtime_fields_only():
    base = dict(image_id="sha256:1", command=["serve"], env={"A": "1"}, memory="512m")
    assert plan.spec_hash(base) == plan.spec_hash(dict(base, wave=3, strategy="canary"))
    assert plan.spec_hash(base) != plan.spec_hash(dict(base, env={"A": "2"}))
    assert plan.spec_hash(base) != plan.spec_hash(dict(base, image_id="sha256:2"))


def test_port_placeholders_are_filled_per_slot():
    assert plan.with_port({"GEKKO_PORT": "{port}", "X": ["a{port}", 3]}, 9101) == {
        "GEKKO_PORT": "9101",
        "X": ["a9101", 3],
    }


def test_env_file_parsing_and_bad_lines():
    assert plan.parse_env_file("# c\n\nA=1\nB=x=y\nC=\n") == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        plan.parse_env_file("just text\n")


METRICS = """# TYPE gekko_http_requests_total counter
gekko_http_requests_total{component="trading",route="trading",method="POST",status_class="2xx"} 90.0
gekko_http_requests_total{component="trading",route="trading",method="POST",status_class="5xx"} 10.0
gekko_http_requests_total{component="trading",route="health",method="GET",status_class="5xx"} 500.0
gekko_http_requests_total{component="trading",route="metrics",method="GET",status_class="2xx"} 7.0
"""


def test_request_counts_ignore_health_checks_and_scrapes():
    assert plan.request_counts(METRICS) == (100.0, 10.0)


def test_error_rate_between_samples():
    assert plan.error_rate((100.0, 10.0), (200.0, 40.0)) == (pytest.approx(0.3), 100)
    assert plan.error_rate((5.0, 0.0), (5.0, 0.0)) == (0.0, 0)


def test_canary_with_a_low_error_rate_over_enough_requests_is_promoted():
    assert plan.canary_verdict((200, 4), 0.05, 20) == (plan.CANARY_PASS, pytest.approx(0.02), 200)


def test_canary_with_a_high_error_rate_fails():
    assert plan.canary_verdict((100, 30), 0.05, 20) == (plan.CANARY_FAIL, pytest.approx(0.3), 100)


def test_one_error_in_three_requests_is_a_third_not_a_twentieth():
    # The sample is small, but a third of what the canary served failed: it is not promoted.
    verdict, rate, requests = plan.canary_verdict((3, 1), 0.05, 20)
    assert (verdict, requests) == (plan.CANARY_FAIL, 3)
    assert rate == pytest.approx(1 / 3)


def test_canary_ejected_after_a_few_errors_fails_on_its_errors():
    # Five failures, then no more traffic (the gateway ejected it): 100 %, not "too few".
    assert plan.canary_verdict((5, 5), 0.05, 20)[0] == plan.CANARY_FAIL


def test_a_clean_canary_below_the_minimum_sample_is_not_yet_promoted():
    assert plan.canary_verdict((19, 0), 0.05, 20) == (plan.CANARY_TOO_FEW, 0.0, 19)
    assert plan.canary_verdict((20, 0), 0.05, 20)[0] == plan.CANARY_PASS


def test_rate_exactly_at_the_limit_passes():
    assert plan.canary_verdict((100, 5), 0.05, 20)[0] == plan.CANARY_PASS
    assert plan.canary_verdict((100, 6), 0.05, 20)[0] == plan.CANARY_FAIL


def test_canary_without_traffic_is_not_promoted_even_with_no_minimum():
    assert plan.canary_verdict((0, 0), 0.05, 0) == (plan.CANARY_TOO_FEW, 0.0, 0)


GPU0 = {"driver": "nvidia", "device_ids": ["0"], "capabilities": [["gpu"]]}


def test_empty_or_missing_device_requests_keep_the_hash_containers_already_have():
    base = dict(image_id="sha256:1", command=["serve"], env={"A": "1"}, memory="512m")
    # The hash a container created before device_requests existed carries in its label.
    before = plan.spec_hash(base)
    assert plan.spec_hash(dict(base, device_requests=[])) == before
    assert plan.spec_hash(dict(base, device_requests=None)) == before


def test_changing_the_gpus_changes_the_hash():
    base = dict(image_id="sha256:1", device_requests=plan.device_requests([GPU0]))
    other_gpu = dict(base, device_requests=plan.device_requests([dict(GPU0, device_ids=["1"])]))
    assert plan.spec_hash(base) != plan.spec_hash(dict(base, device_requests=[]))
    assert plan.spec_hash(base) != plan.spec_hash(other_gpu)


def test_device_requests_from_the_module_and_from_the_template_hash_alike():
    # The module fills unset suboptions with None; the template leaves them out.
    from_module = dict(GPU0, count=None, options=None)
    assert plan.device_requests([from_module]) == plan.device_requests([GPU0]) == [GPU0]
    assert plan.device_requests([dict(GPU0, device_ids=[0])])[0]["device_ids"] == ["0"]


def test_device_requests_become_docker_device_requests():
    docker_types = pytest.importorskip("docker.types")
    (request,) = plan.device_requests([GPU0, {"driver": "nvidia", "count": -1}])[:1]
    assert docker_types.DeviceRequest(**request) == {
        "Driver": "nvidia",
        "Count": 0,
        "DeviceIDs": ["0"],
        "Capabilities": [["gpu"]],
        "Options": {},
    }
    every_gpu = plan.device_requests([{"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}])
    assert docker_types.DeviceRequest(**every_gpu[0])["Count"] == -1


def test_a_device_request_with_count_and_device_ids_is_refused():
    with pytest.raises(ValueError, match="either count or device_ids"):
        plan.device_requests([dict(GPU0, count=1)])


def test_mounts_change_the_hash_and_none_keep_the_old_one():
    base = dict(image_id="sha256:1", command=["serve"], env={"A": "1"})
    before = plan.spec_hash(base)
    assert plan.spec_hash(dict(base, mounts=[])) == before
    assert plan.spec_hash(dict(base, mounts=None)) == before
    tls = [{"source": "/etc/gekko/tls/app", "target": "/etc/gekko/tls", "read_only": True}]
    assert plan.spec_hash(dict(base, mounts=tls)) != before


SYSLOG = {
    "driver": "syslog",
    "options": {
        "syslog-address": "udp://127.0.0.1:5514",
        "syslog-format": "rfc5424micro",
        "tag": "{{.Name}}",
    },
}


def test_no_log_driver_keeps_the_hash_containers_already_have():
    base = dict(image_id="sha256:1", command=["serve"], env={"A": "1"})
    before = plan.spec_hash(base)
    for log in (None, {}, {"driver": None, "options": {}}):
        assert plan.log_config(log) is None
        assert plan.spec_hash(dict(base, log=plan.log_config(log))) == before
    assert plan.spec_hash(dict(base, log=plan.log_config(SYSLOG))) != before


def test_log_options_become_strings_and_a_changed_option_changes_the_hash():
    log = plan.log_config({"driver": "syslog", "options": {"syslog-tls-skip-verify": True, "n": 3}})
    assert log == {"driver": "syslog", "options": {"syslog-tls-skip-verify": "true", "n": "3"}}
    assert plan.log_config({"driver": "local"}) == {"driver": "local", "options": {}}
    syslog = dict(image_id="sha256:1", log=plan.log_config(SYSLOG))
    other_port = dict(SYSLOG, options=dict(SYSLOG["options"], **{"syslog-address": "udp://h:1"}))
    assert plan.spec_hash(syslog) != plan.spec_hash(dict(syslog, log=plan.log_config(other_port)))
    assert plan.spec_hash(syslog) == plan.spec_hash(dict(syslog, log=plan.log_config(SYSLOG)))


def test_log_config_becomes_dockers_log_config():
    docker_types = pytest.importorskip("docker.types")
    log = plan.log_config(SYSLOG)
    assert docker_types.LogConfig(type=log["driver"], config=log["options"]) == {
        "Type": "syslog",
        "Config": SYSLOG["options"],
    }
