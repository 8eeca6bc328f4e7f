"""The deploy history the node exporter serves: what Prometheus and the alert rules read."""

from __future__ import annotations

from ansible_collections.gekko.platform.plugins.module_utils import _deploy_metrics as metrics


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
