"""The deploy history the node exporter serves: what Prometheus and the alert rules read."""

from __future__ import annotations

from ansible_collections.gekko.platform.plugins.module_utils import _deploy_metrics as metrics

from .module_runner import run_module


def test_a_rollback_keeps_when_the_last_success_was():
    first = metrics.render({"succeeded": 100.0}, 30.0, {}, "r-1", "local")
    finished = metrics.finished_times(first)
    finished["rolled_back"] = 200.0
    second = metrics.render(finished, 45.5, {"validate": 4.0}, "r-1", "local")
    assert 'gekko_deploy_finished_timestamp_seconds{outcome="succeeded"} 100.000' in second
    assert 'gekko_deploy_finished_timestamp_seconds{outcome="rolled_back"} 200.000' in second
    assert "gekko_deploy_duration_seconds 45.500" in second
    assert 'gekko_deploy_phase_duration_seconds{phase="validate"} 4.000' in second
    assert 'gekko_deploy_info{release="r-1",environment="local"} 1' in second


def test_a_phase_ends_where_the_next_begins_and_the_last_at_the_finish():
    durations = metrics.phase_durations(
        {"prepare": 104.0, "validate": 100.0, "verify": 130.0, "activate": 120.0}, 136.5
    )
    assert durations == {"validate": 4.0, "prepare": 16.0, "activate": 10.0, "verify": 6.5}


def test_unknown_or_malformed_lines_in_an_old_file_are_ignored():
    text = (
        'gekko_deploy_finished_timestamp_seconds{outcome="succeeded"} 5\n'
        'gekko_deploy_finished_timestamp_seconds{outcome="exploded"} 6\n'
        "garbage line\n"
    )
    assert metrics.finished_times(text) == {"succeeded": 5.0}


def test_label_values_are_escaped_so_the_file_stays_parseable():
    from prometheus_client.parser import text_string_to_metric_families

    text = metrics.render({"failed": 1.0}, 1.0, {'we"ird': 1.0}, 'r"1\\x', "lo\ncal")
    families = {family.name: family for family in text_string_to_metric_families(text)}
    info = families["gekko_deploy_info"].samples[0]
    assert info.labels == {"release": 'r"1\\x', "environment": "lo cal"}
    phase = families["gekko_deploy_phase_duration_seconds"].samples[0]
    assert phase.labels == {"phase": 'we"ird'}


def run(tmp_path, **args):
    return run_module("deploy_metrics", tmp_path, args)


def test_a_start_is_its_own_file_made_with_its_folder_and_a_finish_leaves_it(tmp_path):
    folder = tmp_path / "metrics"  # a first deploy: the node exporter's folder is not there yet
    started = run(
        tmp_path, path=str(folder / "deploy-started.prom"), outcome="started",
        started_at=1700000000.0, environment="local",
    )  # fmt: skip
    assert started.get("failed") is not True, started
    text = (folder / "deploy-started.prom").read_text()
    assert 'gekko_deploy_started_timestamp_seconds{environment="local"} 1700000000.000' in text
    assert "gekko_deploy_finished_timestamp_seconds" not in text
    finished = run(
        tmp_path, path=str(folder / "deploys.prom"), outcome="succeeded",
        started_at=1700000000.0, finished_at=1700000090.0, environment="local",
    )  # fmt: skip
    assert finished["changed"] is True
    assert (folder / "deploy-started.prom").read_text() == text
    assert 'outcome="succeeded"} 1700000090.000' in (folder / "deploys.prom").read_text()
