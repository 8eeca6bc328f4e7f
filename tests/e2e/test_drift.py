"""Issue 14, item 5: configuration drift (EC-SW-003).

A check run (`make drift`: deploy.yml --check --diff) changes nothing and reports what differs
from the inventory because it was changed outside Ansible, here a file, a container and a
runtime setting, and nothing else (no false drift). The gekko.platform.drift_report callback
lists them, each host's drift.prom counts them for the ConfigurationDrift alert, and a deploy
converges them back.
"""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest

from .conftest import REPO, ansible_playbook, wait_for_health

pytestmark = pytest.mark.e2e

REPORT = REPO / ".build/reports/drift-report.json"
DRIFT_METRICS = Path("/var/lib/gekko/metrics/drift.prom")
IDENT = Path("/etc/gekko/postgres/pg_ident.conf")
# A risky hand edit: the host's root mapped to the database's owner.
EDIT = "gekko-backup    root    gekko\n"


def _check() -> list[dict]:
    run = ansible_playbook("deploy.yml", "--check", "--diff")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "GEKKO DRIFT" in run.stdout
    return json.loads(REPORT.read_text())["items"]


def _drift_count() -> float:
    line = next(
        ln for ln in DRIFT_METRICS.read_text().splitlines() if ln.startswith("gekko_drift_items ")
    )
    return float(line.split()[1])


def _runtime_setting(engine, name: str) -> str:
    redis = engine.containers.get("gekko-redis")
    return redis.exec_run(["redis-admin", "--no-raw", "HGET", "gekko:config", name]).output.decode()


def test_a_check_reports_changes_made_outside_ansible_and_a_deploy_converges_them(gateway):
    engine = docker.from_env()
    original = IDENT.read_text()
    log_level = _runtime_setting(engine, "log_level")
    try:
        IDENT.write_text(original + EDIT)
        engine.containers.get("gekko-social").stop()
        engine.containers.get("gekko-redis").exec_run(
            ["redis-admin", "HSET", "gekko:config", "log_level", "DEBUG"]
        )

        items = _check()
        # The three changes, each once, and nothing else: what was left alone is no false drift.
        assert len(items) == 3, items
        assert [i["paths"] for i in items if "paths" in i] == [[str(IDENT)]], items
        containers = [i["containers"] for i in items if "containers" in i]
        assert containers == [["gekko-social: start"]], items
        assert [i for i in items if "runtime settings" in i["task"]], items
        assert _drift_count() == 3
        # A check changes nothing.
        assert IDENT.read_text() == original + EDIT
        assert engine.containers.get("gekko-social").status == "exited"
        assert "DEBUG" in _runtime_setting(engine, "log_level")

        run = ansible_playbook("deploy.yml")
        assert run.returncode == 0, run.stdout[-3000:]
        assert IDENT.read_text() == original
        assert engine.containers.get("gekko-social").status == "running"
        assert _runtime_setting(engine, "log_level") == log_level
        assert _drift_count() == 0
    finally:
        if IDENT.read_text() != original:
            IDENT.write_text(original)
        wait_for_health(gateway, timeout=120)
