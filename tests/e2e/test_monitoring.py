"""Prometheus as the deploy left it: every component scraped and up, rules loaded, history kept.

Read-only: these run before the modules that redeploy (conftest.REDEPLOY_ORDER).
"""

from __future__ import annotations

import subprocess

import httpx
import pytest

from .conftest import PROMETHEUS, SERVICES, prometheus_targets, wait_until
from .rollout import running_containers

EXPECTED_JOBS = {
    "alertmanager",
    "prometheus",
    "gateway",
    "kpis",
    "services",
    "node",
    "containers",
    "docker",
    "postgres",
    "redis",
}


def query(expr: str) -> list[dict]:
    answer = httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": expr}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]["result"]


@pytest.fixture(scope="module")
def targets() -> list[dict]:
    try:
        return wait_until(
            lambda: (
                (found := prometheus_targets())
                and all(t["health"] == "up" for t in found)
                and found
            ),
            "every Prometheus target up",
            timeout=60,
            interval=2,
        )
    except httpx.ConnectError:
        pytest.fail(f"no Prometheus at {PROMETHEUS}: was the stack deployed with `make deploy`?")


def test_every_component_is_a_target_and_up(targets):
    assert {t["labels"]["job"] for t in targets} == EXPECTED_JOBS
    down = [(t["scrapeUrl"], t["lastError"]) for t in targets if t["health"] != "up"]
    assert not down
    # Every target says which host it is on (alerts group and inhibit by it).
    assert all(t["labels"].get("host") for t in targets)


def test_every_running_service_instance_is_scraped_and_nothing_else(targets):
    scraped = {t["labels"]["container"] for t in targets if t["labels"]["job"] == "services"}
    running = {
        name
        for name, c in running_containers().items()
        if c["service"] in SERVICES and c["status"] == "running"
    }
    assert scraped == running
    services = {t["labels"]["service"] for t in targets if t["labels"]["job"] == "services"}
    assert services == set(SERVICES)


@pytest.mark.parametrize(
    ("expr", "what"),
    [
        ('pg_up{job="postgres"} == 1', "the PostgreSQL exporter reaches PostgreSQL"),
        ('redis_up{job="redis"} == 1', "the Redis exporter reaches Redis as gekko-monitor"),
        ('node_memory_MemAvailable_bytes{job="node"} > 0', "the node exporter reads the host"),
        ('gekko_container_memory_usage_bytes{container="gekko-trading"} > 0', "container usage"),
        ('gekko_container_running{container="gekko-postgres"} == 1', "datastore containers too"),
        ('engine_daemon_engine_info{job="docker"}', "the Docker engine's own metrics"),
        ('gekko_http_requests_total{job="services",service="trading"}', "a service's own metrics"),
        ('gekko_kpi_fill_rate{job="kpis"}', "the KPIs, with the scrape credential"),
        ('gekko_deploy_finished_timestamp_seconds{outcome="succeeded"} > 0', "the deploy history"),
        ('gekko_deploy_phase_duration_seconds{phase="prepare"} > 0', "the deploy's phase times"),
        (
            "gekko_deploy_started_timestamp_seconds < on (instance) "
            'gekko_deploy_finished_timestamp_seconds{outcome="succeeded"}',
            "the deploy's start, before its finish",
        ),
    ],
)
def test_prometheus_has_current_data_from_each_source(targets, expr, what):
    assert query(expr), f"no series for {expr}: {what}"


def test_retention_is_the_environments(targets):
    flags = httpx.get(f"{PROMETHEUS}/api/v1/status/flags", timeout=10).json()["data"]
    # inventories/local: a few days, small.
    assert flags["storage.tsdb.retention.time"] == "3d"
    assert flags["storage.tsdb.retention.size"] == "1GiB"  # Prometheus's spelling of 1GB


def test_every_alert_rule_is_loaded_with_a_runbook(targets):
    groups = httpx.get(f"{PROMETHEUS}/api/v1/rules", timeout=10).json()["data"]["groups"]
    alerts = [rule for group in groups for rule in group["rules"] if rule["type"] == "alerting"]
    assert len(alerts) >= 15
    for rule in alerts:
        assert rule["annotations"]["runbook_url"].endswith(f"/{rule['name']}.md"), rule["name"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["name"]
    # Healthy stack: nothing fires right after the deploy's checks passed.
    firing = [a["metric"]["alertname"] for a in query("ALERTS{alertstate='firing'}")]
    assert not [name for name in firing if name in {"InstanceDown", "HostDown"}], firing


def test_every_listener_is_on_the_hosts_address_only():
    listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    ports = {"9090", "9093", "9094", "9100", "9338", "9187", "9121", "9323"}
    for line in listening.splitlines():
        local = line.split()[3]
        address, _, port = local.rpartition(":")
        if port in ports:
            assert address == "127.0.0.1", f"{local} listens beyond the host's bind address"
