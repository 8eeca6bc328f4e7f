"""A second deploy of what stands reports no change: every task is idempotent. And one run at a
time: a deploy finds another run's lock and fails naming it before changing anything, and takes
over the lock a killed run left.

It runs on the stack the fresh deploy stood up, the first of the modules that run playbooks
(conftest.REDEPLOY_ORDER), so in `make test` beside the checks rather than in the late part."""

import json
import socket
import subprocess
import time
from pathlib import Path

from .conftest import ansible_playbook, recap

LOCK = Path("/var/lib/gekko/deploy.lock")
STARTED = Path("/var/lib/gekko/metrics/deploy-started.prom")


def plant_lock(**holder) -> None:
    run = {"run": "e2e-other-run", "operator": "bob", "playbook": "deploy.yml", **holder}
    LOCK.write_text(json.dumps(dict(run, taken_at=time.time())))


def test_a_deploy_fails_naming_another_runs_lock_before_changing_anything():
    plant_lock(controller="ci-elsewhere", pid=1)
    started_before = STARTED.read_text()
    try:
        run = ansible_playbook("deploy.yml", "-e", "gekko_deploy_lock_wait=0")
        assert run.returncode != 0
        assert (
            "the deploy lock /var/lib/gekko/deploy.lock is held by run e2e-other-run of "
            "deploy.yml by bob on ci-elsewhere (process 1)" in run.stdout
        ), run.stdout[-3000:]
        assert "-e gekko_deploy_lock_break=e2e-other-run" in run.stdout
        hosts = recap(run.stdout)
        assert hosts and all(h["changed"] == 0 for h in hosts.values()), hosts
        # It never started: no start recorded for Prometheus, the other run's lock untouched.
        assert STARTED.read_text() == started_before
        assert json.loads(LOCK.read_text())["run"] == "e2e-other-run"
    finally:
        LOCK.unlink(missing_ok=True)


def test_second_deploy_reports_no_changes_and_takes_over_a_killed_runs_lock():
    # A run of this controller that was killed: its process is gone.
    killed = subprocess.Popen(["true"])
    killed.wait()
    plant_lock(controller=socket.gethostname(), pid=killed.pid)
    started = time.monotonic()
    run = ansible_playbook("deploy.yml")
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    hosts = recap(run.stdout)
    assert hosts and all(h["changed"] == 0 and h["failed"] == 0 for h in hosts.values()), hosts
    assert "GEKKO DEPLOYMENT SUMMARY" in run.stdout
    assert "WARNING: took over the deploy lock on localhost from run e2e-other-run" in run.stdout
    assert not LOCK.exists(), "the run releases its lock when it ends"
    print(f"no-op redeploy took {elapsed:.1f}s")
